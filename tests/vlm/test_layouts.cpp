// The transformers-native `fast_vlm` layout (renamed tensors, embedding padded with an `<image>` token,
// Qwen2 under text_config) must give the same answers as the original release layout. The tiny fixture
// is rewritten into that layout here, following the renaming rules in shared/docs/fastvlm-facts.md.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include <png.h>

#include <cstdio>

#include "fastvlm/fastvlm.hpp"
#include "image/decode.h"
#include "image/preprocess.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using namespace fastvlm;

namespace {

const fs::path kTiny = fs::path(FASTVLM_SHARED_DIR) / "fixtures" / "tiny-fastvlm";

// The centre square of an image, written as an 8-bit RGB PNG.
void write_center_square_png(const fs::path& from, const fs::path& to) {
  const Image image = decode_image_file(from.string(), {});
  const int side = std::min(image.width, image.height);
  const int left = (image.width - side) / 2, top = (image.height - side) / 2;
  FILE* file = std::fopen(to.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, file);
  png_set_IHDR(png, info, side, side, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < side; ++y)
    png_write_row(png, image.rgb.data() + (size_t(top + y) * image.width + left) * 3);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(file);
}

// llava_qwen2 name -> fast_vlm name for the tiny tower (layers [1,2,2,1,1], RepCPE before stages 3, 4):
// network.0 = stage 0, 1 = downsample of stage 1, 2 = stage 1, 3 = downsample 2, 4 = stage 2,
// 5 = downsample 3, 6 = pos_emb 3, 7 = stage 3, 8 = downsample 4, 9 = pos_emb 4, 10 = stage 4.
std::string fast_vlm_name(const std::string& name) {
  static const char* network_to_stage[] = {"stages.0.blocks", "stages.1.downsample", "stages.1.blocks",
                                           "stages.2.downsample", "stages.2.blocks", "stages.3.downsample",
                                           "stages.3.pos_emb", "stages.3.blocks", "stages.4.downsample",
                                           "stages.4.pos_emb", "stages.4.blocks"};
  const std::string tower = "model.vision_tower.vision_tower.model.";
  if (name.rfind("model.mm_projector.0.", 0) == 0) return "model.multi_modal_projector.linear_1." + name.substr(21);
  if (name.rfind("model.mm_projector.2.", 0) == 0) return "model.multi_modal_projector.linear_2." + name.substr(21);
  if (name.rfind(tower, 0) != 0) return name.rfind("model.", 0) == 0 ? "model.language_model." + name.substr(6) : name;
  std::string rest = name.substr(tower.size());
  std::smatch m;
  if (std::regex_match(rest, m, std::regex(R"(network\.(\d+)\.(.*))")))
    rest = std::string(network_to_stage[std::stoi(m[1])]) + "." + m[2].str();
  rest = std::regex_replace(rest, std::regex(R"(^patch_embed\.)"), "stem.");
  rest = std::regex_replace(rest, std::regex(R"(^conv_exp\.)"), "final_conv.");
  rest = std::regex_replace(rest, std::regex(R"(\.se\.reduce\.)"), ".se.fc1.");
  rest = std::regex_replace(rest, std::regex(R"(\.se\.expand\.)"), ".se.fc2.");
  rest = std::regex_replace(rest, std::regex(R"(\.convffn\.)"), ".mlp.");
  rest = std::regex_replace(rest, std::regex(R"(\.lkb_reparam\.)"), ".reparam_conv.");
  rest = std::regex_replace(rest, std::regex(R"((layer_scale(_[12])?)$)"), "$1.gamma");
  return "model.vision_tower.timm_model." + rest;
}

}  // namespace

TEST(Layouts, FastVlmLayoutAnswersLikeTheRelease) {
  fs::path dir = fs::temp_directory_path() / ("fastvlm-layout-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto original = SafetensorsFile::open(kTiny / "model.safetensors");
  const int64_t padded_vocab = 152000;  // 151936 + the <image> token, rounded up to a multiple of 64
  std::vector<std::vector<uint8_t>> padded;  // keeps the padded tables alive until written
  std::vector<TensorToWrite> tensors;
  for (const auto& t : original->tensors()) {
    Shape shape = t.shape;
    const void* data = t.data;
    size_t nbytes = t.nbytes;
    if (t.name == "model.embed_tokens.weight" || t.name == "lm_head.weight") {
      padded.emplace_back(size_t(padded_vocab) * shape[1] * 2, 0);
      std::memcpy(padded.back().data(), t.data, t.nbytes);
      shape[0] = padded_vocab;
      data = padded.back().data();
      nbytes = padded.back().size();
    }
    if (t.name.ends_with("layer_scale") || t.name.ends_with("layer_scale_1") || t.name.ends_with("layer_scale_2"))
      shape = {shape[0]};  // timm keeps layer scales as [C]
    tensors.push_back({fast_vlm_name(t.name), t.dtype, shape, data, nbytes});
  }
  write_safetensors(dir / "model.safetensors", tensors);

  nlohmann::json llava = nlohmann::json::parse(std::ifstream(kTiny / "config.json"));
  nlohmann::json text;
  for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "rms_norm_eps", "rope_theta", "tie_word_embeddings",
                          "max_position_embeddings", "bos_token_id", "eos_token_id", "hidden_act"})
    text[key] = llava[key];
  text["vocab_size"] = padded_vocab;
  text["model_type"] = "qwen2";
  nlohmann::json vision = llava["vision_config"];
  vision["architecture"] = "fastvit_mci3";
  vision["hidden_size"] = 512;
  std::ofstream(dir / "config.json") << nlohmann::json{{"model_type", "fast_vlm"},
                                                       {"architectures", {"FastVlmForConditionalGeneration"}},
                                                       {"text_config", text},
                                                       {"vision_config", vision},
                                                       {"image_token_index", 151646},
                                                       {"projector_hidden_act", "gelu"}}
                                            .dump(1);
  // A CLIP processor (shortest edge, center crop) that, on a square image, pixel for pixel does what the
  // release's pad-to-square does.
  std::ofstream(dir / "preprocessor_config.json")
      << R"({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 256},
             "crop_size": {"height": 256, "width": 256}, "do_normalize": false, "resample": 3})";
  for (const char* file : {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                           "generation_config.json"})
    fs::copy_file(kTiny / file, dir / file);
  nlohmann::json added = nlohmann::json::parse(std::ifstream(kTiny / "added_tokens.json"));
  added["<image>"] = 151646;
  std::ofstream(dir / "added_tokens.json") << added.dump();

  auto release = Engine::load(kTiny.string());
  auto native = Engine::load(dir.string());
  EXPECT_EQ(native->info().image_tokens, 16);
  GenerateOptions greedy;
  greedy.max_tokens = 16;
  const fs::path square = dir / "square.png";
  write_center_square_png(kTiny / "golden" / "image_a_320x200.png", square);
  ImageInput image = ImageInput::file(square.string());
  Session a(*release), b(*native);
  Generation expected = a.ask("Describe the image.", &image, greedy);
  Generation actual = b.ask("Describe the image.", &image, greedy);
  EXPECT_EQ(actual.token_ids, expected.token_ids);
  EXPECT_EQ(actual.prompt_tokens, expected.prompt_tokens);

  // A wide image is center-cropped, not padded: the pixel values are the CLIP processor's.
  const ImageInput wide = ImageInput::file((kTiny / "golden" / "image_a_320x200.png").string());
  std::vector<float> native_pixels, release_pixels;
  native->embed_image(wide, nullptr, nullptr, &native_pixels);
  release->embed_image(wide, nullptr, nullptr, &release_pixels);
  const Tensor expected_pixels =
      preprocess_image(decode_image_file((kTiny / "golden" / "image_a_320x200.png").string(), {}),
                       read_image_processor_config(dir / "preprocessor_config.json"));
  EXPECT_EQ(native_pixels, std::vector<float>(expected_pixels.data(), expected_pixels.data() + expected_pixels.numel()));
  EXPECT_NE(native_pixels, release_pixels);
  fs::remove_all(dir);
}
