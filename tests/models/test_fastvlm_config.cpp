// FastVLM's config.json and checkpoint loading: typed config, tensor lookup with shape checks, shards, and
// errors that name the file and the key or tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/checkpoint.h"
#include "models/fastvlm/fastvlm_config.h"
#include "models/quantize.h"
#include "models/registry.h"

namespace fs = std::filesystem;
using namespace fastvlm;

namespace {

const fs::path kTiny = fs::path(FASTVLM_SHARED_DIR) / "fixtures" / "tiny-fastvlm";

// A copy of the tiny model's config (and, on request, weights) in a temp dir, to be edited by a test.
class ModelCopy {
 public:
  explicit ModelCopy(bool link_weights = true) {
    dir_ = fs::temp_directory_path() / ("fastvlm-ckpt-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::create_directories(dir_);
    std::ifstream in(kTiny / "config.json");
    config_ = nlohmann::json::parse(in);
    if (link_weights) fs::create_symlink(kTiny / "model.safetensors", dir_ / "model.safetensors");
    save();
  }
  ~ModelCopy() { fs::remove_all(dir_); }
  nlohmann::json& config() { return config_; }
  void save() { std::ofstream(dir_ / "config.json") << config_.dump(1); }
  const fs::path& dir() const { return dir_; }

 private:
  static inline int counter_ = 0;
  fs::path dir_;
  nlohmann::json config_;
};

std::string open_error(const fs::path& dir) {
  try {
    find_architecture(dir);
    load_fastvlm_config(dir);
    Checkpoint::open(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Checkpoint, ParsesTheTinyConfig) {
  EXPECT_EQ(find_architecture(kTiny).family, "fastvlm");
  const FastVlmConfig c = load_fastvlm_config(kTiny);
  EXPECT_EQ(c.text.hidden_size, 64);
  EXPECT_EQ(c.text.num_key_value_heads, 2);
  EXPECT_EQ(c.text.head_dim, 16);
  EXPECT_DOUBLE_EQ(c.text.rope.theta, 1e6);
  EXPECT_TRUE(c.text.qkv_bias);
  EXPECT_FALSE(c.text.o_bias);
  EXPECT_EQ(c.vision.image_size, 256);
  EXPECT_EQ(c.vision.total_stride(), 64);
  EXPECT_EQ(c.vision.embed_dims, (std::vector<int>{16, 32, 64, 128, 256}));
  EXPECT_EQ(c.vision.pos_emb_kernel, (std::vector<int>{0, 0, 0, 7, 7}));
  EXPECT_EQ(c.vision.token_mixers[3], TokenMixer::Attention);
  EXPECT_EQ(c.mm_hidden_size, 512);
  EXPECT_EQ(c.text.eos_token_ids, std::vector<int>{151645});
}

TEST(Checkpoint, StockConfigMeansFastViTHD) {
  ModelCopy copy(false);
  copy.config().erase("vision_config");
  copy.config()["mm_vision_tower"] = "mobileclip_l_1024";
  copy.config()["mm_hidden_size"] = 3072;
  copy.save();
  FastVlmConfig c = load_fastvlm_config(copy.dir());
  EXPECT_EQ(c.vision.layers, (std::vector<int>{2, 12, 24, 4, 2}));
  EXPECT_EQ(c.vision.embed_dims.back(), 1536);
  EXPECT_EQ(c.vision.out_channels(), 3072);
  EXPECT_EQ(c.vision.image_size, 1024);
  EXPECT_EQ(c.vision.total_stride(), 64);
}

TEST(Checkpoint, ShapeCheckedTensorAccess) {
  auto ckpt = Checkpoint::open(kTiny);
  Tensor w = ckpt->load_f32("model.mm_projector.0.weight", {64, 512});
  EXPECT_EQ(w.numel(), 64 * 512);
  try {
    ckpt->load_f32("model.mm_projector.0.weight", {512, 64});
    FAIL() << "wrong shape accepted";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("model.mm_projector.0.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("[64, 512]"), std::string::npos) << m;
    EXPECT_NE(m.find("model.safetensors"), std::string::npos) << m;
  }
  try {
    ckpt->tensor("model.no_such.weight", {1});
    FAIL() << "missing tensor accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.no_such.weight"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos);
  }
}

TEST(Checkpoint, RejectsUnknownConfigValues) {
  struct Case {
    const char* key;
    nlohmann::json value;
  };
  const Case cases[] = {
      {"model_type", "gpt_neox"},       {"mm_projector_type", "linear"}, {"image_aspect_ratio", "anyres"},
      {"hidden_act", "gelu"},           {"mm_vision_tower", "clip_vit"}, {"num_key_value_heads", 3},
      {"mm_use_im_start_end", true},    {"hidden_size", "64"},           {"mm_hidden_size", 100},
  };
  for (const auto& c : cases) {
    ModelCopy copy;
    copy.config()[c.key] = c.value;
    copy.save();
    std::string m = open_error(copy.dir());
    EXPECT_NE(m.find("config.json"), std::string::npos) << c.key << ": " << m;
    EXPECT_NE(m.find(c.key), std::string::npos) << c.key << ": " << m;
  }
  ModelCopy mixers;
  mixers.config()["vision_config"]["token_mixers"][0] = "conv";
  mixers.save();
  EXPECT_NE(open_error(mixers.dir()).find("vision_config.token_mixers"), std::string::npos);
}

// Values in range for an int but absurd for the model: each once ended in a crash (SIGFPE from a stride
// product overflowing to 0), std::bad_alloc (a billion layers), undefined behaviour (1e300 converted to
// int, int products overflowing) or a silent narrowing (4294967297 read as 1). Each must be an error
// naming the file and the key, raised while the config is parsed.
TEST(Checkpoint, RefusesConfigValuesOutsideSaneRanges) {
  struct Case {
    std::vector<std::string> path;  // into config.json
    nlohmann::json value;
    const char* key;                // expected in the message
    nlohmann::json also = nlohmann::json::object();  // further top-level keys to set
  };
  const Case cases[] = {
      {{"vision_config", "down_stride"}, 65536, "vision_config.down_stride"},
      {{"vision_config", "down_stride"}, 16, "vision_config.down_stride"},  // 4 * 16^4 > 16384
      {{"num_hidden_layers"}, 1000000000, "num_hidden_layers"},
      {{"vision_config", "layers"}, {4294967297ull, 1, 1, 1, 1}, "vision_config.layers"},
      {{"vision_config", "cls_ratio"}, 1e300, "vision_config.cls_ratio"},
      {{"vision_config", "cls_ratio"}, 1.001, "vision_config.cls_ratio"},  // not whole channels
      // 65536 heads of 65536 dimensions: 2^32 overflows int.
      {{"num_attention_heads"}, 65536, "num_attention_heads", {{"head_dim", 65536}, {"num_key_value_heads", 65536}}},
      {{"head_dim"}, 1 << 20, "head_dim"},
      {{"vocab_size"}, 1 << 30, "vocab_size"},
      {{"intermediate_size"}, 1 << 17, "intermediate_size", {{"hidden_size", 1 << 15}}},  // 2^32 elements
      {{"vocab_size"}, 1 << 22, "vocab_size", {{"hidden_size", 1 << 10}}},                // 2^32 elements
      {{"mm_vision_tower"}, "mobileclip_l_65536", "mm_vision_tower"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.key);
    ModelCopy copy;
    nlohmann::json* target = &copy.config();
    for (size_t i = 0; i + 1 < c.path.size(); ++i) target = &(*target)[c.path[i]];
    if (c.value.is_array()) {  // layers: one entry per stage of the tiny tower
      ASSERT_EQ((*target)[c.path.back()].size(), c.value.size());
    }
    (*target)[c.path.back()] = c.value;
    copy.config().update(c.also);
    copy.save();
    std::string m = open_error(copy.dir());
    EXPECT_NE(m.find("config.json"), std::string::npos) << m;
    EXPECT_NE(m.find(c.key), std::string::npos) << m;
  }
}

// Written as text (building it as a json would recurse in the test itself): the value printed in the
// error message once overflowed the stack.
TEST(Checkpoint, DeeplyNestedConfigIsRefusedWhileParsing) {
  ModelCopy copy;
  std::ofstream(copy.dir() / "config.json")
      << R"({"model_type":"llava_qwen2","hidden_size":)" << std::string(100000, '[') << std::string(100000, ']') << "}";
  const std::string m = open_error(copy.dir());
  EXPECT_NE(m.find("config.json"), std::string::npos) << m;
  EXPECT_NE(m.find("nests deeper"), std::string::npos) << m;
}

// A NaN or infinity has no quantised code (its conversion to an integer is undefined behaviour):
// quantize refuses the checkpoint and writes no model; loading it with the LLM quantised at load (the
// default precision's Q8_0) fails likewise; both name the file, the tensor and where.
TEST(Quantize, NonFiniteWeightsAreRefusedNamingTheTensor) {
  const std::string poisoned = "model.layers.1.mlp.down_proj.weight";
  for (const float bad : {std::nanf(""), INFINITY}) {
    ModelCopy copy(/*link_weights=*/false);
    for (const char* name : {"tokenizer_config.json", "vocab.json", "merges.txt", "added_tokens.json"})
      fs::copy_file(kTiny / name, copy.dir() / name);
    auto source = SafetensorsFile::open(kTiny / "model.safetensors");
    std::vector<std::vector<float>> copies;
    std::vector<TensorToWrite> tensors;
    for (const TensorInfo& info : source->tensors()) {
      if (info.name != poisoned) {
        tensors.push_back({info.name, info.dtype, info.shape, info.data, info.nbytes});
        continue;
      }
      std::vector<float>& values = copies.emplace_back(size_t(shape_numel(info.shape)));
      convert_to_f32(info.dtype, info.data, values.data(), values.size());
      values[40] = bad;
      tensors.push_back({info.name, DType::F32, info.shape, values.data(), values.size() * sizeof(float)});
    }
    ASSERT_EQ(copies.size(), 1u);
    write_safetensors(copy.dir() / "model.safetensors", tensors);
    const fs::path out = copy.dir() / "q8";
    try {
      quantize_model(copy.dir(), out, WeightType::Q8_0);
      ADD_FAILURE() << "a non-finite weight must be refused";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find((copy.dir() / "model.safetensors").string()), std::string::npos) << m;
      EXPECT_NE(m.find(poisoned), std::string::npos) << m;
      EXPECT_NE(m.find("NaN or an infinity at [0, 40]"), std::string::npos) << m;
    }
    EXPECT_FALSE(fs::exists(out / "model.safetensors"));
    for (const WeightType type : {WeightType::Q8_0, WeightType::Q4_0}) {
      ModelLoadOptions options;
      options.quantize_llm = type;
      try {
        load_model(copy.dir(), options);
        ADD_FAILURE() << "a non-finite weight must not be quantised at load";
      } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find((copy.dir() / "model.safetensors").string()), std::string::npos) << m;
        EXPECT_NE(m.find(poisoned), std::string::npos) << m;
        EXPECT_NE(m.find("NaN or an infinity at [0, 40]"), std::string::npos) << m;
      }
    }
  }
}

TEST(Checkpoint, LoadsShardedCheckpoints) {
  // Split the tiny checkpoint in two shards plus an index, as large releases are stored.
  auto whole = SafetensorsFile::open(kTiny / "model.safetensors");
  ModelCopy copy(false);
  std::vector<TensorToWrite> first, second;
  nlohmann::json weight_map;
  for (const auto& t : whole->tensors()) {
    bool in_first = t.name.find("vision_tower") != std::string::npos;
    (in_first ? first : second).push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
    weight_map[t.name] = in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  write_safetensors(copy.dir() / "model-00001-of-00002.safetensors", first);
  write_safetensors(copy.dir() / "model-00002-of-00002.safetensors", second);
  std::ofstream(copy.dir() / "model.safetensors.index.json") << nlohmann::json{{"weight_map", weight_map}}.dump();
  auto ckpt = Checkpoint::open(copy.dir());
  EXPECT_TRUE(ckpt->has("lm_head.weight"));
  EXPECT_TRUE(ckpt->has("model.vision_tower.vision_tower.model.patch_embed.0.reparam_conv.weight"));
  EXPECT_NE(ckpt->file_of("lm_head.weight").string().find("00002"), std::string::npos);
}

TEST(Checkpoint, MissingWeightsFileIsAnError) {
  ModelCopy copy(false);
  EXPECT_NE(open_error(copy.dir()).find("no model.safetensors"), std::string::npos);
  EXPECT_NE(open_error(copy.dir() / "nope").find("not a model directory"), std::string::npos);
}
