// Text-only families through the engine, against the goldens of an independent PyTorch reference of
// Hugging Face's Qwen2 and Llama semantics (tiny-qwen2-text: tied embeddings, q/k/v biases; tiny-llama:
// llama3 RoPE scaling, explicit head_dim, untied). The chat case goes through the template in the model's
// tokenizer_config.json, raw and long through a raw prompt.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <unistd.h>

#include "core/error.h"
#include "fastvlm/fastvlm.hpp"
#include "golden.h"
#include "run_command.h"

namespace fs = std::filesystem;
using namespace fastvlm;
using fastvlm::test_support::CommandResult;
using fastvlm::test_support::run_command;
using fastvlm::test_support::shell_quote;

namespace {

const fs::path kFixtures = fs::path(FASTVLM_SHARED_DIR) / "fixtures";
const std::string kCli = std::string(FASTVLM_BIN_DIR) + "/fastvlm";

struct GoldenCase {
  std::string model, name;
};

nlohmann::json golden_case(const GoldenCase& c) {
  const nlohmann::json golden = nlohmann::json::parse(std::ifstream(kFixtures / c.model / "golden" / "golden.json"));
  for (const auto& entry : golden["cases"])
    if (entry["case"] == c.name) return entry;
  throw std::runtime_error("no golden case " + c.name);
}

EngineOptions f32_options() {
  EngineOptions options;
  options.precision = Precision::F32;
  options.context = 1024;
  return options;
}

// The chat case as a user would ask it; the others as raw prompts.
Generation run_case(const Engine& engine, const GoldenCase& c, const nlohmann::json& golden, int max_tokens) {
  Session session(engine);
  GenerateOptions greedy;
  greedy.max_tokens = max_tokens;
  greedy.keep_logits = true;
  if (c.name == "chat") return session.ask("Write a haiku about the sea.", nullptr, greedy);
  return session.complete(golden["text"].get<std::string>(), greedy);
}

class TextGolden : public testing::TestWithParam<GoldenCase> {};

TEST_P(TextGolden, PromptIdsTokensAndLastLogitsMatchTheReference) {
  const GoldenCase& c = GetParam();
  const nlohmann::json golden = golden_case(c);
  const auto engine = Engine::load((kFixtures / c.model).string(), f32_options());
  const std::vector<int32_t> expected_tokens = golden["tokens"];
  const Generation g = run_case(*engine, c, golden, int(expected_tokens.size()));
  EXPECT_EQ(g.prompt_ids, golden["prompt_ids"].get<std::vector<int32_t>>());
  EXPECT_EQ(g.prompt_tokens, golden["n_prompt"].get<int>());
  EXPECT_EQ(g.token_ids, expected_tokens);  // every step's top-1/top-2 margin exceeds 1e-3 (golden min_margin)

  const std::vector<float> reference =
      fixtures::read_golden(kFixtures / c.model / "golden" / "goldens.safetensors", c.name + ".last_logits");
  ASSERT_FALSE(g.step_logits.empty());
  const std::vector<float>& logits = g.step_logits.front();  // over the tokenizer's ids
  ASSERT_LE(logits.size(), reference.size());
  float absmax = 0, worst = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    absmax = std::max(absmax, std::abs(reference[i]));
    worst = std::max(worst, std::abs(logits[i] - reference[i]));
  }
  EXPECT_LE(worst, 1e-3f * absmax) << c.model << "/" << c.name;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TextGolden,
                         testing::Values(GoldenCase{"tiny-qwen2-text", "chat"}, GoldenCase{"tiny-qwen2-text", "raw"},
                                         GoldenCase{"tiny-qwen2-text", "long"}, GoldenCase{"tiny-llama", "chat"},
                                         GoldenCase{"tiny-llama", "raw"}, GoldenCase{"tiny-llama", "long"}),
                         [](const auto& info) {
                           std::string name = info.param.model + "_" + info.param.name;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(TextModels, InfoNamesTheFamilyAndTheChatFormat) {
  const auto qwen2 = Engine::load((kFixtures / "tiny-qwen2-text").string(), f32_options());
  EXPECT_EQ(qwen2->info().family, "qwen2");
  EXPECT_EQ(qwen2->info().chat_format, "chatml");
  EXPECT_EQ(qwen2->info().image_tokens, 0);
  const auto llama = Engine::load((kFixtures / "tiny-llama").string(), f32_options());
  EXPECT_EQ(llama->info().family, "llama");
  const auto fastvlm = Engine::load((kFixtures / "tiny-fastvlm").string(), f32_options());
  EXPECT_EQ(fastvlm->info().family, "fastvlm");
  EXPECT_EQ(fastvlm->info().chat_format, "fastvlm");
}

TEST(TextModels, AnImageIsRefusedByATextOnlyModel) {
  const auto engine = Engine::load((kFixtures / "tiny-qwen2-text").string(), f32_options());
  Session session(*engine);
  const ImageInput image = ImageInput::file((kFixtures / "tiny-fastvlm" / "golden" / "image_a_320x200.png").string());
  try {
    session.ask("What is this?", &image, {});
    FAIL() << "an image was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no vision encoder"), std::string::npos) << e.what();
  }
  EXPECT_THROW(engine->embed_image(image), Error);
}

// A follow-up turn renders the whole conversation and prefills only what the cache lacks; the answer is
// the one a fresh session gives to the same conversation.
TEST(TextModels, FollowUpTurnsReuseTheCachedConversation) {
  const auto engine = Engine::load((kFixtures / "tiny-llama").string(), f32_options());
  GenerateOptions greedy;
  greedy.max_tokens = 6;
  Session chat(*engine);
  const Generation first = chat.ask("Write a haiku about the sea.", nullptr, greedy);
  const Generation second = chat.ask("And one about the mountains.", nullptr, greedy);
  EXPECT_LT(second.prompt_tokens, int(second.prompt_ids.size()) - int(first.prompt_ids.size()) + 2);

  Session fresh(*engine);
  const Generation whole = fresh.respond({{"user", "Write a haiku about the sea.", std::nullopt},
                                          {"assistant", first.text, std::nullopt},
                                          {"user", "And one about the mountains.", std::nullopt}},
                                         greedy);
  EXPECT_EQ(whole.prompt_ids, second.prompt_ids);
  EXPECT_EQ(whole.token_ids, second.token_ids);
}

TEST(TextModels, ChatFormatOverrideAndUnknownName) {
  EngineOptions options = f32_options();
  options.chat_format = "llama3";
  const auto engine = Engine::load((kFixtures / "tiny-qwen2-text").string(), options);
  EXPECT_EQ(engine->info().chat_format, "llama3");
  options.chat_format = "vicuna";
  try {
    Engine::load((kFixtures / "tiny-qwen2-text").string(), options);
    FAIL() << "an unknown chat format was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("chatml"), std::string::npos) << e.what();
  }
}

// A copy of a fixture with an edited config.json (weights linked), to provoke load errors.
class EditedModel {
 public:
  EditedModel(const std::string& fixture, const std::function<void(nlohmann::json&)>& edit) {
    dir_ = fs::temp_directory_path() / ("fastvlm-text-" + std::to_string(::getpid()) + "-" + std::to_string(count_++));
    fs::create_directories(dir_);
    for (const auto& entry : fs::directory_iterator(kFixtures / fixture))
      if (entry.is_regular_file() && entry.path().filename() != "config.json")
        fs::create_symlink(entry.path(), dir_ / entry.path().filename());
    nlohmann::json config = nlohmann::json::parse(std::ifstream(kFixtures / fixture / "config.json"));
    edit(config);
    std::ofstream(dir_ / "config.json") << config.dump(1);
  }
  ~EditedModel() { fs::remove_all(dir_); }
  std::string dir() const { return dir_.string(); }
  std::string load_error() const {
    try {
      Engine::load(dir(), f32_options());
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

 private:
  static inline int count_ = 0;
  fs::path dir_;
};

TEST(TextModels, BadConfigsAreOneLineErrorsNamingFileAndKey) {
  struct Case {
    std::string fixture;
    std::function<void(nlohmann::json&)> edit;
    std::vector<std::string> expected;  // substrings of the message
  };
  const Case cases[] = {
      {"tiny-llama", [](auto& c) { c["model_type"] = "gpt_neox"; }, {"config.json", "model_type", "llama"}},
      {"tiny-llama", [](auto& c) { c.erase("num_attention_heads"); }, {"config.json", "num_attention_heads"}},
      {"tiny-llama", [](auto& c) { c["attention_bias"] = true; }, {"fastvlm-text-", "self_attn.q_proj.bias", "missing"}},
      {"tiny-llama", [](auto& c) { c["rope_scaling"]["rope_type"] = "yarn"; }, {"config.json", "rope_scaling.rope_type", "yarn"}},
      {"tiny-llama", [](auto& c) { c["rope_scaling"]["beta_fast"] = 32; }, {"config.json", "rope_scaling.beta_fast"}},
      {"tiny-llama", [](auto& c) { c.erase("rope_theta"); }, {"config.json", "rope_theta"}},
      {"tiny-llama", [](auto& c) { c["hidden_act"] = "gelu"; }, {"config.json", "hidden_act"}},
      {"tiny-qwen2-text", [](auto& c) { c["use_sliding_window"] = true; }, {"config.json", "use_sliding_window"}},
      {"tiny-qwen2-text", [](auto& c) { c["tie_word_embeddings"] = false; }, {"lm_head.weight", "missing"}},
  };
  for (const Case& c : cases) {
    const EditedModel model(c.fixture, c.edit);
    const std::string message = model.load_error();
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    for (const std::string& part : c.expected) EXPECT_NE(message.find(part), std::string::npos) << message;
  }
}

// transformers >= 5 writes the RoPE base into rope_parameters: read there, it gives the same model.
TEST(TextModels, RopeParametersHoldTheBaseAndTheScaling) {
  const EditedModel moved("tiny-llama", [](nlohmann::json& c) {
    nlohmann::json parameters = c["rope_scaling"];
    parameters["rope_theta"] = c["rope_theta"];
    c["rope_parameters"] = parameters;
    c.erase("rope_theta");
    c.erase("rope_scaling");
  });
  GenerateOptions greedy;
  greedy.max_tokens = 8;
  const nlohmann::json golden = golden_case({"tiny-llama", "long"});
  const auto engine = Engine::load(moved.dir(), f32_options());
  Session session(*engine);
  EXPECT_EQ(session.complete(golden["text"].get<std::string>(), greedy).token_ids,
            golden["tokens"].get<std::vector<int32_t>>());
}

// The quantizer asks each family for its linears: every projection (and an untied lm_head) of both text
// families is stored as Q8_0 / Q4_0, and the model still answers close to float32.
TEST(TextModels, QuantisedTextModelsLoadAndStayClose) {
  for (const char* model : {"tiny-qwen2-text", "tiny-llama"}) {
    const nlohmann::json golden = golden_case({model, "raw"});
    const std::vector<float> reference =
        fixtures::read_golden(kFixtures / model / "golden" / "goldens.safetensors", "raw.last_logits");
    for (const char* type : {"q8", "q4"}) {
      const fs::path out = fs::temp_directory_path() / ("fastvlm-textq-" + std::to_string(::getpid()) + model + type);
      fs::remove_all(out);
      const CommandResult result = run_command(kCli + " quantize -m " + shell_quote((kFixtures / model).string()) +
                                               " -o " + shell_quote(out.string()) + " --type " + type + " 2>&1");
      ASSERT_EQ(result.exit_code, 0) << result.out;
      const int layers = 2, linears = layers * 7 + (std::string(model) == "tiny-llama" ? 1 : 0);  // tied: no lm_head
      EXPECT_NE(result.out.find("quantised " + std::to_string(linears) + " LLM linears"), std::string::npos) << result.out;

      const auto engine = Engine::load(out.string(), f32_options());
      EXPECT_EQ(engine->info().quantization, std::string(type) + "_0");
      Session session(*engine);
      GenerateOptions one;
      one.max_tokens = 1;
      one.keep_logits = true;
      const Generation g = session.complete(golden["text"].get<std::string>(), one);
      ASSERT_EQ(g.step_logits.size(), 1u);
      double error = 0, norm = 0;
      for (size_t i = 0; i < g.step_logits[0].size(); ++i) {
        error += std::pow(g.step_logits[0][i] - reference[i], 2);
        norm += std::pow(reference[i], 2);
      }
      // Relative RMS error of the logits: ~1e-2 for Q8_0, ~1e-1 for Q4_0 on these random weights.
      EXPECT_LT(std::sqrt(error / norm), std::string(type) == "q8" ? 3e-2 : 3e-1) << model << " " << type;
      fs::remove_all(out);
    }
  }
}

TEST(TextModels, CliRunsTheGoldenChatAndRawCases) {
  for (const char* model : {"tiny-qwen2-text", "tiny-llama"}) {
    const nlohmann::json chat = golden_case({model, "chat"}), raw = golden_case({model, "raw"});
    const std::string base = kCli + " run -q -m " + shell_quote((kFixtures / model).string()) + " --dtype f32 --temp 0 --json -n 16";
    CommandResult result = run_command(base + " -p 'Write a haiku about the sea.'");
    ASSERT_EQ(result.exit_code, 0) << result.out;
    nlohmann::json out = nlohmann::json::parse(result.out);
    EXPECT_EQ(out["token_ids"], chat["tokens"]) << model;
    EXPECT_EQ(out["prompt_ids"], chat["prompt_ids"]) << model;
    result = run_command(base + " --raw -p " + shell_quote(raw["text"].get<std::string>()));
    ASSERT_EQ(result.exit_code, 0) << result.out;
    out = nlohmann::json::parse(result.out);
    EXPECT_EQ(out["token_ids"], raw["tokens"]) << model;
    EXPECT_EQ(out["prompt_tokens"], raw["n_prompt"]) << model;
  }
  const CommandResult image = run_command(kCli + " run -q -m " + shell_quote((kFixtures / "tiny-llama").string()) +
                                          " -p hi --image " +
                                          shell_quote((kFixtures / "tiny-fastvlm/golden/image_a_320x200.png").string()) +
                                          " 2>&1");
  EXPECT_NE(image.exit_code, 0);
  EXPECT_NE(image.out.find("has no vision encoder"), std::string::npos) << image.out;
}

}  // namespace
