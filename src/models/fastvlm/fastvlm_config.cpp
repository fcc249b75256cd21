#include "models/fastvlm/fastvlm_config.h"

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_file.h"
#include "io/config_keys.h"
#include "models/qwen2/qwen2.h"

namespace fastvlm {
namespace {

using nlohmann::json;

// Ceilings far above FastViTHD (5 stages of up to 24 blocks, 1536 channels, stride 2, 7x7 patches, a
// 1024 input), so that a corrupt value is refused before it sizes memory or overflows the stride product.
constexpr size_t kMaxStages = 16;
constexpr int kMaxBlocks = 1024;
constexpr int kMaxChannels = 1 << 16;
constexpr int kMaxRatio = 64;
constexpr int kMaxKernel = 63;
constexpr int kMaxStride = 16;
constexpr int kMaxImageSize = 16384;

// "mobileclip_l_1024" -> 1024: FastVLM takes its input size from the vision tower name alone.
int image_size_from_tower_name(const std::string& name, const std::filesystem::path& file) {
  const std::string stem = "mobileclip_l_";
  if (name.rfind(stem, 0) != 0)
    throw Error(file.string() + ": key 'mm_vision_tower': expected \"mobileclip_l_<size>\", got \"" + name + "\"");
  std::string digits = name.substr(stem.size());
  if (digits.empty() || digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos)
    throw Error(file.string() + ": key 'mm_vision_tower': cannot read an image size from \"" + name + "\"");
  const int size = std::stoi(digits);
  if (size < 1 || size > kMaxImageSize)
    throw Error(file.string() + ": key 'mm_vision_tower': image size " + digits + " is outside [1, " +
                std::to_string(kMaxImageSize) + "]");
  return size;
}

std::vector<int> int_list(const ConfigKeys& keys, const char* key, size_t count, int min_value, int max_value) {
  const json& v = keys.at(key);
  if (!v.is_array() || v.size() != count) keys.fail(key, "a list of " + std::to_string(count) + " integers");
  std::vector<int> out;
  for (const auto& x : v) {
    // Checked as int64 before narrowing: 4294967297 must not become 1.
    if (!x.is_number_integer() || x.get<int64_t>() < min_value || x.get<int64_t>() > max_value)
      keys.fail(key, "a list of integers in [" + std::to_string(min_value) + ", " + std::to_string(max_value) + "]");
    out.push_back(x.get<int>());
  }
  return out;
}

void parse_vision_config(const json& object, const std::filesystem::path& file, VisionConfig& vision) {
  ConfigKeys keys(object, file, "vision_config.");
  if (!keys.has("layers")) keys.fail("layers", "a list of blocks per stage");
  if (!object["layers"].is_array() || object["layers"].empty() || object["layers"].size() > kMaxStages)
    keys.fail("layers", "a non-empty list of at most " + std::to_string(kMaxStages) + " stages");
  const size_t stages = object["layers"].size();
  vision.layers = int_list(keys, "layers", stages, 1, kMaxBlocks);
  if (!keys.has("embed_dims")) keys.fail("embed_dims", "a list of channel counts");
  vision.embed_dims = int_list(keys, "embed_dims", stages, 1, kMaxChannels);
  vision.mlp_ratios = keys.has("mlp_ratios") ? int_list(keys, "mlp_ratios", stages, 1, kMaxRatio)
                                             : std::vector<int>(stages, 4);

  vision.downsamples.assign(stages, true);
  if (keys.has("downsamples")) {
    const json& v = object["downsamples"];
    if (!v.is_array() || v.size() != stages) keys.fail("downsamples", "a list of booleans, one per stage");
    for (size_t i = 0; i < stages; ++i) {
      if (!v[i].is_boolean()) keys.fail("downsamples", "a list of booleans");
      vision.downsamples[i] = v[i].get<bool>();
    }
  }

  if (!keys.has("token_mixers")) keys.fail("token_mixers", "a list of \"repmixer\"/\"attention\"");
  const json& mixers = object["token_mixers"];
  if (!mixers.is_array() || mixers.size() != stages) keys.fail("token_mixers", "one entry per stage");
  vision.token_mixers.clear();
  for (const auto& m : mixers) {
    if (m == "repmixer") vision.token_mixers.push_back(TokenMixer::RepMixer);
    else if (m == "attention") vision.token_mixers.push_back(TokenMixer::Attention);
    else keys.fail("token_mixers", "\"repmixer\" or \"attention\" for every stage");
  }

  vision.pos_emb_kernel.assign(stages, 0);
  if (keys.has("pos_embs")) {
    const json& v = object["pos_embs"];
    if (!v.is_array() || v.size() != stages) keys.fail("pos_embs", "one entry (null or a kernel size) per stage");
    for (size_t i = 0; i < stages; ++i) {
      if (v[i].is_null()) continue;
      if (!v[i].is_number_integer() || v[i].get<int64_t>() < 1 || v[i].get<int64_t>() > kMaxKernel ||
          v[i].get<int64_t>() % 2 == 0)
        keys.fail("pos_embs", "null or an odd kernel size up to " + std::to_string(kMaxKernel) + " per stage");
      vision.pos_emb_kernel[i] = v[i].get<int>();
    }
  }
  vision.cls_ratio = float(keys.number("cls_ratio", 2.0, kMaxRatio));
  vision.down_patch_size = keys.integer("down_patch_size", 7, 1, kMaxKernel);
  vision.down_stride = keys.integer("down_stride", 2, 1, kMaxStride);
  vision.repmixer_kernel_size = keys.integer("repmixer_kernel_size", 3, 1, kMaxKernel);
  vision.projection_dim = keys.integer("projection_dim", 768, 1, kMaxChannels);
  if (keys.string("norm_layer", "layernorm_channel") != "layernorm_channel")
    keys.fail("norm_layer", "\"layernorm_channel\"");
  if (keys.has("image_size")) vision.image_size = keys.integer("image_size", 0, 1, kMaxImageSize);
  // VisionConfig::total_stride() multiplies in int: up to 16 stages of stride 16 would overflow it (to 0
  // for a stride of 65536, then a division by zero). No stride beyond the largest input makes sense.
  int64_t stride = 4;
  for (int i = 0; i + 1 < vision.num_stages(); ++i)
    if (vision.has_patch_embed_after(i) && (stride *= vision.down_stride) > kMaxImageSize)
      keys.fail("down_stride", "a stride whose product over the stages (with the stem's 4) is at most " +
                                   std::to_string(kMaxImageSize));
  for (size_t i = 0; i < stages; ++i)
    if (vision.token_mixers[i] == TokenMixer::Attention && vision.embed_dims[i] % vision.head_dim != 0)
      keys.fail("embed_dims", "attention stages with a multiple of head_dim 32 channels");
  // out_channels() converts embed_dims.back() * cls_ratio to int: at most 2^16 * 64, but it must be whole.
  const double widened = vision.embed_dims.back() * double(vision.cls_ratio);
  if (widened != std::floor(widened)) keys.fail("cls_ratio", "a ratio that widens the last stage to whole channels");
}

// The original release: LLaVA keys at the top level, the tower named mobileclip_l_<input size>.
void parse_llava_multimodal(const ConfigKeys& keys, const json& root, const std::filesystem::path& file,
                            FastVlmConfig& config) {
  config.mm_hidden_size = keys.required_integer("mm_hidden_size", 1, kMaxChannels * kMaxRatio);
  if (keys.string("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu") keys.fail("mm_projector_type", "\"mlp2x_gelu\"");
  if (keys.string("image_aspect_ratio", "pad") != "pad") keys.fail("image_aspect_ratio", "\"pad\"");
  if (keys.boolean("mm_use_im_start_end", false))
    keys.fail("mm_use_im_start_end", "false (image start/end tokens are not supported)");
  if (keys.boolean("mm_use_im_patch_token", false))
    keys.fail("mm_use_im_patch_token", "false (image patch tokens are not supported)");
  config.image_token_index = keys.integer("image_token_index", -200, -1000000);

  const int tower_size = image_size_from_tower_name(keys.string("mm_vision_tower", ""), file);
  VisionConfig& vision = config.vision;
  if (keys.has("vision_config") && !root["vision_config"].empty()) {
    if (!root["vision_config"].is_object()) keys.fail("vision_config", "an object");
    parse_vision_config(root["vision_config"], file, vision);
    if (vision.image_size != tower_size && root["vision_config"].contains("image_size"))
      throw Error(file.string() + ": vision_config.image_size " + std::to_string(vision.image_size) +
                  " disagrees with mm_vision_tower size " + std::to_string(tower_size));
  }
  vision.image_size = tower_size;
}

// The transformers-native layout (FastVlmForConditionalGeneration): Qwen2 under text_config, the tower a
// timm `fastvit_mci3` (stock FastViTHD) under vision_config, the input size in preprocessor_config.json.
void parse_fast_vlm_multimodal(const ConfigKeys& keys, const json& root, const std::filesystem::path& dir,
                               FastVlmConfig& config) {
  const auto file = dir / "config.json";
  if (!keys.has("vision_config") || !root["vision_config"].is_object())
    keys.fail("vision_config", "an object describing the timm FastViT tower");
  ConfigKeys vision_keys(root["vision_config"], file, "vision_config.");
  if (vision_keys.string("architecture", "fastvit_mci3") != "fastvit_mci3")
    vision_keys.fail("architecture", "\"fastvit_mci3\" (FastViTHD)");
  // A reduced tower may be described with the same keys as in the llava_qwen2 layout.
  if (vision_keys.has("layers")) parse_vision_config(root["vision_config"], file, config.vision);
  config.mm_hidden_size = vision_keys.integer("hidden_size", config.vision.out_channels(), 1, kMaxChannels * kMaxRatio);
  if (keys.string("projector_hidden_act", "gelu") != "gelu") keys.fail("projector_hidden_act", "\"gelu\"");
  if (!keys.boolean("multimodal_projector_bias", true)) keys.fail("multimodal_projector_bias", "true");
  if (keys.string("vision_feature_select_strategy", "full") != "full")
    keys.fail("vision_feature_select_strategy", "\"full\"");
  config.image_token_index = keys.integer("image_token_index", keys.integer("image_token_id", 151646, 0), 0);

  // The processor resizes to crop_size (or size.shortest_edge); FastViTHD's native input is 1024.
  config.vision.image_size = 1024;
  const auto processor_file = dir / "preprocessor_config.json";
  if (std::filesystem::exists(processor_file)) {
    const json processor = read_json_file(processor_file);
    for (const char* key : {"crop_size", "size"}) {
      if (!processor.contains(key) || !processor[key].is_object()) continue;
      const json& size = processor[key];
      for (const char* dim : {"height", "shortest_edge"})
        if (size.contains(dim) && size[dim].is_number_integer()) {
          const int64_t value = size[dim].get<int64_t>();
          if (value < 1 || value > kMaxImageSize)
            throw Error(processor_file.string() + ": key '" + key + "." + dim + "': expected an integer in [1, " +
                        std::to_string(kMaxImageSize) + "], got " + std::to_string(value));
          config.vision.image_size = int(value);
          break;
        }
      break;
    }
  }
}

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
}

// The llava_qwen2 name of a tensor of the transformers-native fast_vlm layout. There the FastViT modules
// are grouped per stage (stages.S.{pos_emb,blocks,downsample}); the original numbers them in one
// `network` list in build order: [RepCPE,] blocks, [PatchEmbed] for each stage.
std::string llava_name(std::string name, const VisionConfig& vision) {
  auto take_prefix = [&name](std::string_view from, std::string_view to) {
    if (name.rfind(from, 0) != 0) return false;
    name = std::string(to) + name.substr(from.size());
    return true;
  };
  if (take_prefix("model.language_model.", "model.") || take_prefix("language_model.model.", "model.")) return name;
  if (take_prefix("model.multi_modal_projector.linear_1.", "model.mm_projector.0.") ||
      take_prefix("model.multi_modal_projector.linear_2.", "model.mm_projector.2."))
    return name;
  if (!take_prefix("model.vision_tower.timm_model.", "")) return name;

  // network index of each stage's modules
  std::vector<int> pos_emb_index(vision.num_stages(), -1), blocks_index(vision.num_stages()),
      downsample_index(vision.num_stages(), -1);
  for (int stage = 0, n = 0; stage < vision.num_stages(); ++stage) {
    if (vision.pos_emb_kernel[stage]) pos_emb_index[stage] = n++;
    blocks_index[stage] = n++;
    if (vision.has_patch_embed_after(stage)) downsample_index[stage + 1] = n++;
  }
  if (name.rfind("stages.", 0) == 0) {
    size_t dot = name.find('.', 7);
    int stage = std::stoi(name.substr(7, dot - 7));
    std::string rest = name.substr(dot + 1);
    if (stage < 0 || stage >= vision.num_stages()) return name;
    auto network = [](int index) { return "network." + std::to_string(index) + "."; };
    if (rest.rfind("blocks.", 0) == 0 && blocks_index[stage] >= 0) {
      name = network(blocks_index[stage]) + rest.substr(7);
    } else if (rest.rfind("pos_emb.", 0) == 0 && pos_emb_index[stage] >= 0) {
      name = network(pos_emb_index[stage]) + rest.substr(8);
    } else if (rest.rfind("downsample.", 0) == 0 && downsample_index[stage] >= 0) {
      name = network(downsample_index[stage]) + rest.substr(11);
      replace_all(name, ".proj.0.reparam_conv.", ".proj.0.lkb_reparam.");
    }
  }
  take_prefix("stem.", "patch_embed.") || take_prefix("final_conv.", "conv_exp.");
  replace_all(name, ".se.fc1.", ".se.reduce.");
  replace_all(name, ".se.fc2.", ".se.expand.");
  replace_all(name, ".mlp.", ".convffn.");
  for (const char* scale : {"layer_scale", "layer_scale_1", "layer_scale_2"})
    if (name.size() > 6 && name.ends_with(std::string(".") + scale + ".gamma")) name.resize(name.size() - 6);
  return "model.vision_tower.vision_tower.model." + name;
}

}  // namespace

std::string llava_tensor_name(const std::string& stored_name, FastVlmLayout layout, const VisionConfig& vision) {
  return layout == FastVlmLayout::FastVlm ? llava_name(stored_name, vision) : stored_name;
}

FastVlmConfig load_fastvlm_config(const std::filesystem::path& dir) {
  const auto file = dir / "config.json";
  const json root = read_json_file(file);
  if (!root.is_object()) throw Error(file.string() + ": expected a JSON object");
  ConfigKeys keys(root, file);
  FastVlmConfig config;

  const std::string model_type = keys.string("model_type", "");
  if (model_type == "llava_qwen2") {
    config.layout = FastVlmLayout::LlavaQwen2;
    config.text = parse_qwen2_config(keys);
  } else if (model_type == "fast_vlm") {
    config.layout = FastVlmLayout::FastVlm;
    config.text = parse_qwen2_config(keys.nested("text_config"));
  } else {
    keys.fail("model_type", "\"llava_qwen2\" or \"fast_vlm\" (a FastVLM checkpoint)");
  }
  TextConfig& text = config.text;

  if (config.layout == FastVlmLayout::LlavaQwen2) parse_llava_multimodal(keys, root, file, config);
  else parse_fast_vlm_multimodal(keys, root, dir, config);

  const VisionConfig& vision = config.vision;
  if (vision.image_size % vision.total_stride() != 0)
    throw Error(file.string() + ": image size " + std::to_string(vision.image_size) + " is not a multiple of the " +
                "vision tower's stride " + std::to_string(vision.total_stride()));
  if (vision.out_channels() != config.mm_hidden_size)
    throw Error(file.string() + ": key 'mm_hidden_size': expected " + std::to_string(vision.out_channels()) +
                " (vision tower output channels), got " + std::to_string(config.mm_hidden_size));

  // generation_config.json carries the stop ids the released model was tuned with.
  read_generation_eos_ids(dir, text);
  return config;
}

}  // namespace fastvlm
