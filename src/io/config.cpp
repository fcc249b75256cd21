#include "io/config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_file.h"

namespace fastvlm {
namespace {

using nlohmann::json;

// Typed access to one JSON object, with errors naming the file and the key.
class Keys {
 public:
  Keys(const json& object, std::filesystem::path file, std::string prefix = "")
      : object_(object), file_(std::move(file)), prefix_(std::move(prefix)) {}

  bool has(const char* key) const { return object_.contains(key) && !object_[key].is_null(); }

  [[noreturn]] void fail(const char* key, const std::string& expected) const {
    std::string got = has(key) ? object_[key].dump() : "nothing";
    throw Error(file_.string() + ": key '" + prefix_ + key + "': expected " + expected + ", got " + got);
  }

  int integer(const char* key, int fallback, int min_value = 0) const {
    if (!has(key)) return fallback;
    const json& v = object_[key];
    if (!v.is_number_integer() || v.get<int64_t>() < min_value || v.get<int64_t>() > (1 << 30))
      fail(key, "an integer >= " + std::to_string(min_value));
    return v.get<int>();
  }
  int required_integer(const char* key, int min_value = 1) const {
    if (!has(key)) fail(key, "an integer >= " + std::to_string(min_value));
    return integer(key, 0, min_value);
  }
  float number(const char* key, float fallback) const {
    if (!has(key)) return fallback;
    if (!object_[key].is_number() || !(object_[key].get<double>() > 0)) fail(key, "a positive number");
    return object_[key].get<float>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!object_[key].is_boolean()) fail(key, "true or false");
    return object_[key].get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!object_[key].is_string()) fail(key, "a string");
    return object_[key].get<std::string>();
  }
  // An integer or a list of integers (eos_token_id comes in both forms).
  std::vector<int> integers(const char* key) const {
    if (!has(key)) return {};
    const json& v = object_[key];
    std::vector<int> out;
    if (v.is_number_integer()) {
      out.push_back(v.get<int>());
    } else if (v.is_array()) {
      for (const auto& x : v) {
        if (!x.is_number_integer()) fail(key, "an integer or a list of integers");
        out.push_back(x.get<int>());
      }
    } else {
      fail(key, "an integer or a list of integers");
    }
    return out;
  }
  const json& at(const char* key) const { return object_[key]; }

 private:
  const json& object_;
  std::filesystem::path file_;
  std::string prefix_;
};

// "mobileclip_l_1024" -> 1024: FastVLM takes its input size from the vision tower name alone.
int image_size_from_tower_name(const std::string& name, const std::filesystem::path& file) {
  const std::string stem = "mobileclip_l_";
  if (name.rfind(stem, 0) != 0)
    throw Error(file.string() + ": key 'mm_vision_tower': expected \"mobileclip_l_<size>\", got \"" + name + "\"");
  std::string digits = name.substr(stem.size());
  if (digits.empty() || digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos)
    throw Error(file.string() + ": key 'mm_vision_tower': cannot read an image size from \"" + name + "\"");
  return std::stoi(digits);
}

std::vector<int> int_list(const Keys& keys, const char* key, size_t count, int min_value) {
  const json& v = keys.at(key);
  if (!v.is_array() || v.size() != count) keys.fail(key, "a list of " + std::to_string(count) + " integers");
  std::vector<int> out;
  for (const auto& x : v) {
    if (!x.is_number_integer() || x.get<int64_t>() < min_value)
      keys.fail(key, "a list of integers >= " + std::to_string(min_value));
    out.push_back(x.get<int>());
  }
  return out;
}

void parse_vision_config(const json& object, const std::filesystem::path& file, VisionConfig& vision) {
  Keys keys(object, file, "vision_config.");
  if (!keys.has("layers")) keys.fail("layers", "a list of blocks per stage");
  if (!object["layers"].is_array() || object["layers"].empty()) keys.fail("layers", "a non-empty list");
  const size_t stages = object["layers"].size();
  vision.layers = int_list(keys, "layers", stages, 1);
  if (!keys.has("embed_dims")) keys.fail("embed_dims", "a list of channel counts");
  vision.embed_dims = int_list(keys, "embed_dims", stages, 1);
  vision.mlp_ratios = keys.has("mlp_ratios") ? int_list(keys, "mlp_ratios", stages, 1) : std::vector<int>(stages, 4);

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
      if (!v[i].is_number_integer() || v[i].get<int>() < 1 || v[i].get<int>() % 2 == 0)
        keys.fail("pos_embs", "null or an odd kernel size per stage");
      vision.pos_emb_kernel[i] = v[i].get<int>();
    }
  }
  vision.cls_ratio = keys.number("cls_ratio", 2.0f);
  vision.down_patch_size = keys.integer("down_patch_size", 7, 1);
  vision.down_stride = keys.integer("down_stride", 2, 1);
  vision.repmixer_kernel_size = keys.integer("repmixer_kernel_size", 3, 1);
  vision.projection_dim = keys.integer("projection_dim", 768, 1);
  if (keys.string("norm_layer", "layernorm_channel") != "layernorm_channel")
    keys.fail("norm_layer", "\"layernorm_channel\"");
  if (keys.has("image_size")) vision.image_size = keys.integer("image_size", 0, 1);
  for (size_t i = 0; i < stages; ++i)
    if (vision.token_mixers[i] == TokenMixer::Attention && vision.embed_dims[i] % vision.head_dim != 0)
      keys.fail("embed_dims", "attention stages with a multiple of head_dim 32 channels");
}

}  // namespace

int VisionConfig::total_stride() const {
  int stride = 4;  // the stem
  for (int i = 0; i + 1 < num_stages(); ++i)
    if (has_patch_embed_after(i)) stride *= down_stride;
  return stride;
}

namespace {

// The Qwen2 part of a config: the top level of a llava_qwen2 config, `text_config` of a fast_vlm one.
TextConfig parse_text_config(const Keys& keys) {
  TextConfig text;
  text.hidden_size = keys.required_integer("hidden_size");
  text.intermediate_size = keys.required_integer("intermediate_size");
  text.num_hidden_layers = keys.required_integer("num_hidden_layers");
  text.num_attention_heads = keys.required_integer("num_attention_heads");
  text.num_key_value_heads = keys.integer("num_key_value_heads", text.num_attention_heads, 1);
  if (text.hidden_size % text.num_attention_heads != 0) keys.fail("num_attention_heads", "a divisor of hidden_size");
  text.head_dim = keys.integer("head_dim", text.hidden_size / text.num_attention_heads, 1);
  if (text.num_attention_heads % text.num_key_value_heads != 0)
    keys.fail("num_key_value_heads", "a divisor of num_attention_heads");
  text.rms_norm_eps = keys.number("rms_norm_eps", 1e-6f);
  text.rope_theta = keys.number("rope_theta", 10000.0f);
  text.vocab_size = keys.required_integer("vocab_size");
  text.tie_word_embeddings = keys.boolean("tie_word_embeddings", false);
  text.max_position_embeddings = keys.integer("max_position_embeddings", 32768, 1);
  text.bos_token_id = keys.integer("bos_token_id", -1, 0);
  text.eos_token_ids = keys.integers("eos_token_id");
  if (keys.string("hidden_act", "silu") != "silu") keys.fail("hidden_act", "\"silu\"");
  if (keys.has("rope_scaling")) keys.fail("rope_scaling", "null (RoPE scaling is not supported)");
  return text;
}

// The original release: LLaVA keys at the top level, the tower named mobileclip_l_<input size>.
void parse_llava_multimodal(const Keys& keys, const json& root, const std::filesystem::path& file,
                            ModelConfig& config) {
  config.mm_hidden_size = keys.required_integer("mm_hidden_size");
  config.mm_projector_type = keys.string("mm_projector_type", "mlp2x_gelu");
  if (config.mm_projector_type != "mlp2x_gelu") keys.fail("mm_projector_type", "\"mlp2x_gelu\"");
  config.image_aspect_ratio = keys.string("image_aspect_ratio", "pad");
  if (config.image_aspect_ratio != "pad") keys.fail("image_aspect_ratio", "\"pad\"");
  config.mm_use_im_start_end = keys.boolean("mm_use_im_start_end", false);
  if (config.mm_use_im_start_end) keys.fail("mm_use_im_start_end", "false (image start/end tokens are not supported)");
  config.mm_use_im_patch_token = keys.boolean("mm_use_im_patch_token", false);
  if (config.mm_use_im_patch_token) keys.fail("mm_use_im_patch_token", "false (image patch tokens are not supported)");
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
void parse_fast_vlm_multimodal(const Keys& keys, const json& root, const std::filesystem::path& dir,
                               ModelConfig& config) {
  const auto file = dir / "config.json";
  if (!keys.has("vision_config") || !root["vision_config"].is_object())
    keys.fail("vision_config", "an object describing the timm FastViT tower");
  Keys vision_keys(root["vision_config"], file, "vision_config.");
  if (vision_keys.string("architecture", "fastvit_mci3") != "fastvit_mci3")
    vision_keys.fail("architecture", "\"fastvit_mci3\" (FastViTHD)");
  // A reduced tower may be described with the same keys as in the llava_qwen2 layout.
  if (vision_keys.has("layers")) parse_vision_config(root["vision_config"], file, config.vision);
  config.mm_hidden_size = vision_keys.integer("hidden_size", config.vision.out_channels(), 1);
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
          config.vision.image_size = size[dim].get<int>();
          break;
        }
      break;
    }
  }
}

}  // namespace

ModelConfig load_model_config(const std::filesystem::path& dir) {
  const auto file = dir / "config.json";
  const json root = read_json_file(file);
  if (!root.is_object()) throw Error(file.string() + ": expected a JSON object");
  Keys keys(root, file);
  ModelConfig config;

  const std::string model_type = keys.string("model_type", "");
  if (model_type == "llava_qwen2") {
    config.layout = CheckpointLayout::LlavaQwen2;
    config.text = parse_text_config(keys);
  } else if (model_type == "fast_vlm") {
    config.layout = CheckpointLayout::FastVlm;
    if (!keys.has("text_config") || !root["text_config"].is_object()) keys.fail("text_config", "an object");
    config.text = parse_text_config(Keys(root["text_config"], file, "text_config."));
  } else {
    keys.fail("model_type", "\"llava_qwen2\" or \"fast_vlm\" (a FastVLM checkpoint)");
  }
  TextConfig& text = config.text;

  if (keys.has("quantization")) {
    if (!keys.at("quantization").is_object()) keys.fail("quantization", "an object {\"type\", \"group_size\"}");
    Keys quant(keys.at("quantization"), file, "quantization.");
    config.quantization.type = quant.string("type", "");
    if (config.quantization.type != "q8_0" && config.quantization.type != "q4_0")
      quant.fail("type", "\"q8_0\" or \"q4_0\"");
    config.quantization.group_size = quant.integer("group_size", 0);
    if (config.quantization.group_size != 32) quant.fail("group_size", "32");
  }

  if (config.layout == CheckpointLayout::LlavaQwen2) parse_llava_multimodal(keys, root, file, config);
  else parse_fast_vlm_multimodal(keys, root, dir, config);

  const VisionConfig& vision = config.vision;
  if (vision.image_size % vision.total_stride() != 0)
    throw Error(file.string() + ": image size " + std::to_string(vision.image_size) + " is not a multiple of the " +
                "vision tower's stride " + std::to_string(vision.total_stride()));
  if (vision.out_channels() != config.mm_hidden_size)
    throw Error(file.string() + ": key 'mm_hidden_size': expected " + std::to_string(vision.out_channels()) +
                " (vision tower output channels), got " + std::to_string(config.mm_hidden_size));

  // generation_config.json carries the stop ids the released model was tuned with.
  const auto generation_file = dir / "generation_config.json";
  if (std::filesystem::exists(generation_file)) {
    const json generation = read_json_file(generation_file);
    if (generation.is_object()) {
      Keys gen(generation, generation_file);
      for (int id : gen.integers("eos_token_id"))
        if (std::find(text.eos_token_ids.begin(), text.eos_token_ids.end(), id) == text.eos_token_ids.end())
          text.eos_token_ids.push_back(id);
    }
  }
  return config;
}

}  // namespace fastvlm
