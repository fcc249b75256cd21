// The default precision (Auto) against the f32 reference on every golden case of every fixture: its image
// embeddings, its logits at the prompt's last position and its greedy tokens stay inside the bounds the
// README's "Accuracy of the default" states (copied below, not taken from a run). And what Auto is: the
// API's default, resolved per CPU and said in ModelInfo::precision, with the LLM's linears quantised at load
// exactly as `fastvlm quantize` would store them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "fastvlm/fastvlm.hpp"
#include "kernels/capabilities.h"
#include "models/quantize.h"

namespace fs = std::filesystem;
using namespace fastvlm;

namespace {

const fs::path kFixtures = fs::path(FASTVLM_SHARED_DIR) / "fixtures";

// The README's bounds for the default on the fixtures (section "Accuracy of the default").
constexpr double kImageEmbedsBound = 3e-2;   // max|diff| / max|f32|
constexpr double kLastLogitsBound = 5e-2;    // rms(diff) / rms(f32), the prompt's last position
constexpr double kStepLogitsBound = 5e-2;    // the same at every teacher-forced step
constexpr double kTop1AgreementBound = 0.75; // fraction of teacher-forced steps with the f32 argmax
constexpr int kSteps = 16;

struct GoldenCase {
  std::string fixture, name, prompt;
  bool raw = false;
  fs::path image;  // empty: no image
};

// Every case of every fixture's golden/golden.json, as bench/accuracy.sh enumerates them.
std::vector<GoldenCase> golden_cases() {
  std::vector<GoldenCase> cases;
  std::vector<fs::path> fixtures;
  for (const auto& entry : fs::directory_iterator(kFixtures))
    if (fs::exists(entry.path() / "golden" / "golden.json")) fixtures.push_back(entry.path());
  std::sort(fixtures.begin(), fixtures.end());
  for (const fs::path& fixture : fixtures) {
    const auto golden = nlohmann::json::parse(std::ifstream(fixture / "golden" / "golden.json"));
    const std::string name = fixture.filename().string();
    if (golden.contains("cases"))
      for (const auto& c : golden["cases"]) cases.push_back({name, c["case"], c["text"], true, {}});
    if (golden.contains("images"))
      for (const auto& [image, entry] : golden["images"].items())
        for (const char* extension : {".png", ".jpg", ".jpeg", ".webp"})
          if (fs::exists(fixture / "golden" / (image + extension)))
            cases.push_back({name, image, "Describe the image.", false, fixture / "golden" / (image + extension)});
    if (golden.contains("text_only")) cases.push_back({name, "text_only", "Describe the image.", false, {}});
  }
  return cases;
}

double relative_rms(const std::vector<float>& values, const std::vector<float>& reference) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    diff += std::pow(double(values[i]) - reference[i], 2);
    norm += std::pow(double(reference[i]), 2);
  }
  return std::sqrt(diff / norm);
}

double max_relative(const std::vector<float>& values, const std::vector<float>& reference) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    diff = std::max(diff, std::fabs(double(values[i]) - reference[i]));
    scale = std::max(scale, std::fabs(double(reference[i])));
  }
  return diff / scale;
}

Generation answer(const Engine& engine, const GoldenCase& c, const GenerateOptions& options) {
  Session session(engine);
  if (c.image.empty()) return c.raw ? session.complete(c.prompt, options) : session.ask(c.prompt, nullptr, options);
  const ImageInput image = ImageInput::file(c.image.string());
  return session.ask(c.prompt, &image, options);
}

std::unique_ptr<Engine> load(const fs::path& dir, Precision precision) {
  EngineOptions options;
  options.precision = precision;
  return Engine::load(dir.string(), options);
}

TEST(AutoPrecision, IsTheDefaultAndSaysWhatItResolvedTo) {
  EXPECT_EQ(EngineOptions{}.precision, Precision::Auto);
  const auto engine = Engine::load((kFixtures / "tiny-fastvlm").string());
  const std::string& precision = engine->info().precision;
  if (kernels::vision_int8_available())
    EXPECT_EQ(precision, "auto -> vision int8, llm q8_0 (quantised at load)");
  else
    EXPECT_EQ(precision, "auto -> vision f32, llm f32");
  EXPECT_EQ(load(kFixtures / "tiny-fastvlm", Precision::F32)->info().precision, "f32 -> vision f32, llm f32");
  EXPECT_EQ(load(kFixtures / "tiny-qwen2-text", Precision::F32)->info().precision, "f32 -> llm f32");
  EXPECT_EQ(parse_precision("int8"), Precision::Int8);
  try {
    parse_precision("f64");
    FAIL() << "f64 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dtype must be auto, f32, bf16 or int8, got \"f64\""), std::string::npos)
        << e.what();
  }
}

// Quantising at load is `fastvlm quantize` without the file: the same codes and scales, so the same logits.
TEST(AutoPrecision, QuantisingAtLoadMatchesAQuantisedCheckpoint) {
  if (!kernels::quant_int8_gemm_available())
    GTEST_SKIP() << "Auto quantises the LLM only where the CPU has an int8 GEMM for it (AVX2 and up)";
  const fs::path stored = fs::temp_directory_path() / ("fastvlm-auto-q8-" + std::to_string(::getpid()));
  fs::remove_all(stored);
  quantize_model(kFixtures / "tiny-qwen2-text", stored, WeightType::Q8_0);
  const auto at_load = load(kFixtures / "tiny-qwen2-text", Precision::Auto);
  const auto from_file = load(stored, Precision::Auto);
  EXPECT_EQ(from_file->info().precision, "auto -> llm q8_0 (as stored)");
  EXPECT_EQ(at_load->info().decode_weight_bytes, from_file->info().decode_weight_bytes);
  GenerateOptions options;
  options.max_tokens = 4;
  options.keep_logits = true;
  const GoldenCase raw{"tiny-qwen2-text", "raw", "The capital of France is", true, {}};
  const Generation a = answer(*at_load, raw, options), b = answer(*from_file, raw, options);
  EXPECT_EQ(a.token_ids, b.token_ids);
  EXPECT_EQ(a.step_logits, b.step_logits);
  fs::remove_all(stored);
}

class AutoOnGoldenCase : public testing::TestWithParam<GoldenCase> {};

TEST_P(AutoOnGoldenCase, StaysWithinTheReadmeBounds) {
  const GoldenCase& c = GetParam();
  const fs::path dir = kFixtures / c.fixture;
  const auto reference = load(dir, Precision::F32);
  const auto automatic = load(dir, Precision::Auto);
  GenerateOptions options;
  options.max_tokens = kSteps;
  options.keep_logits = true;
  const Generation expected = answer(*reference, c, options);
  ASSERT_FALSE(expected.token_ids.empty());
  options.forced_tokens = expected.token_ids;
  const Generation forced = answer(*automatic, c, options);
  ASSERT_EQ(forced.step_logits.size(), expected.step_logits.size());

  EXPECT_LE(relative_rms(forced.step_logits[0], expected.step_logits[0]), kLastLogitsBound);
  int agreeing = 0;
  for (size_t step = 0; step < expected.step_logits.size(); ++step) {
    const auto& mine = forced.step_logits[step];
    const auto& theirs = expected.step_logits[step];
    EXPECT_LE(relative_rms(mine, theirs), kStepLogitsBound) << "step " << step;
    agreeing += std::max_element(mine.begin(), mine.end()) - mine.begin() ==
                std::max_element(theirs.begin(), theirs.end()) - theirs.begin();
  }
  EXPECT_GE(agreeing, int(std::ceil(kTop1AgreementBound * double(expected.step_logits.size()))));
  if (!c.image.empty()) {
    const ImageInput image = ImageInput::file(c.image.string());
    EXPECT_LE(max_relative(automatic->embed_image(image), reference->embed_image(image)), kImageEmbedsBound);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryFixture, AutoOnGoldenCase, testing::ValuesIn(golden_cases()),
                         [](const testing::TestParamInfo<GoldenCase>& info) {
                           std::string name = info.param.fixture + "_" + info.param.name;
                           std::replace_if(name.begin(), name.end(), [](char ch) { return !std::isalnum(ch); }, '_');
                           return name;
                         });

}  // namespace
