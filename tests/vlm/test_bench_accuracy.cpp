// `fastvlm bench` measuring the benched engine against a float32 reference on the tiny fixture: f32 against
// itself is exact, quantised LLM weights give a small error that grows from q8 to q4, bf16 reports its
// error without being asked, and a reference that is not a model fails before any timing. First, the API
// it is built on (GenerateOptions::forced_tokens and keep_logits) against the goldens' per-step top-5 logits.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "fastvlm/fastvlm.hpp"
#include "kernels/capabilities.h"
#include "run_command.h"

namespace fs = std::filesystem;

namespace {

const fs::path kTiny = fs::path(FASTVLM_SHARED_DIR) / "fixtures" / "tiny-fastvlm";
const fs::path kImage = kTiny / "golden" / "image_a_320x200.png";
const std::string kBinary = std::string(FASTVLM_BIN_DIR) + "/fastvlm";
constexpr int kSteps = 8;
// Relative RMS logit error budgets: Q8_0 keeps ~0.4% per weight and bf16 rounds activations to 8 mantissa
// bits, both well under 2.5% on this fixture's logits (the budget tests/llm/test_qwen2_formats.cpp uses).
constexpr double kSmallLogitError = 0.025;

using Result = fastvlm::test_support::CommandResult;

Result run(const std::string& args, bool merge_stderr = false) {
  return fastvlm::test_support::run_command(kBinary + " " + args + " < /dev/null" + (merge_stderr ? " 2>&1" : ""));
}

std::string quoted(const fs::path& p) { return fastvlm::test_support::shell_quote(p.string()); }

// `bench` on the fixture image, one repetition of kSteps tokens, as JSON.
nlohmann::json bench_json(const fs::path& model, const std::string& extra_args) {
  Result r = run("bench -m " + quoted(model) + " --image " + quoted(kImage) + " -n " + std::to_string(kSteps) +
                 " --reps 1 --json " + extra_args);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return nlohmann::json::parse(r.out);
}

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("fastvlm-bench-accuracy-" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The golden's logits of every greedy step, checked at its top-5 ids to its topk_vals tolerance.
void expect_golden_step_logits(const fastvlm::Generation& g, const nlohmann::json& entry, size_t steps) {
  const auto top_ids = entry["topk_ids"].get<std::vector<std::vector<size_t>>>();
  const auto top_values = entry["topk_vals"].get<std::vector<std::vector<float>>>();
  ASSERT_EQ(g.step_logits.size(), steps);
  for (size_t step = 0; step < steps; ++step)
    for (size_t k = 0; k < top_ids[step].size(); ++k)
      EXPECT_NEAR(g.step_logits[step].at(top_ids[step][k]), top_values[step][k], 1e-3) << "step " << step;
}

TEST(TeacherForcing, KeptLogitsAreTheGoldenOnesAndForcedTokensAreFollowed) {
  const auto golden = nlohmann::json::parse(std::ifstream(kTiny / "golden" / "golden.json"));
  const nlohmann::json& entry = golden["images"]["image_a_320x200"];
  const auto greedy_tokens = entry["greedy_tokens"].get<std::vector<int32_t>>();
  fastvlm::EngineOptions f32;
  f32.precision = fastvlm::Precision::F32;
  const auto engine = fastvlm::Engine::load(kTiny.string(), f32);
  const auto image = fastvlm::ImageInput::file(kImage.string());

  fastvlm::GenerateOptions options;
  options.max_tokens = int(greedy_tokens.size());
  options.keep_logits = true;
  const fastvlm::Generation free_running = fastvlm::Session(*engine).ask("Describe the image.", &image, options);
  EXPECT_EQ(free_running.token_ids, greedy_tokens);
  expect_golden_step_logits(free_running, entry, greedy_tokens.size());

  // Forcing the golden's first tokens: exactly those come out, generation ends after them, and each step's
  // logits are the golden's.
  options.forced_tokens.assign(greedy_tokens.begin(), greedy_tokens.begin() + 5);
  const fastvlm::Generation forced = fastvlm::Session(*engine).ask("Describe the image.", &image, options);
  EXPECT_EQ(forced.token_ids, options.forced_tokens);
  EXPECT_EQ(forced.stop_reason, fastvlm::StopReason::MaxTokens);
  expect_golden_step_logits(forced, entry, options.forced_tokens.size());

  // Forcing tokens other than the greedy ones: they are followed all the same.
  options.forced_tokens = {9707, 11, 1879};  // "Hello, world"
  EXPECT_EQ(fastvlm::Session(*engine).ask("Describe the image.", &image, options).token_ids, options.forced_tokens);

  options.forced_tokens = {-1};
  EXPECT_THROW(fastvlm::Session(*engine).ask("Describe the image.", &image, options), fastvlm::Error);
}

TEST(BenchAccuracy, Float32AgainstItselfIsExact) {
  const nlohmann::json out = bench_json(kTiny, "--dtype f32 --reference " + quoted(kTiny));
  ASSERT_TRUE(out.contains("accuracy")) << out.dump();
  const nlohmann::json& a = out["accuracy"];
  EXPECT_EQ(a["reference"], kTiny.string());
  EXPECT_EQ(a["steps"], kSteps);
  EXPECT_EQ(a["logit_rel_rms_mean"], 0.0);
  EXPECT_EQ(a["logit_rel_rms_max"], 0.0);
  EXPECT_EQ(a["top1_agreement"], kSteps);
  EXPECT_EQ(a["greedy_prefix"], kSteps);
  EXPECT_EQ(a["image_embeds_rel_err"], 0.0);
  // The timing report is unchanged beside it.
  for (const char* key : {"model", "prompt_tokens", "generated_tokens", "timings", "timings_min_max", "peak_rss_mb"})
    EXPECT_TRUE(out.contains(key)) << key;
}

TEST(BenchAccuracy, QuantisedWeightsStayCloseAndQ4IsFurtherThanQ8) {
  TempDir dir;
  nlohmann::json accuracy[2];
  const char* types[2] = {"q8", "q4"};
  for (int i = 0; i < 2; ++i) {
    const fs::path model = dir.path() / types[i];
    Result q = run("quantize -m " + quoted(kTiny) + " -o " + quoted(model) + " --type " + types[i], true);
    ASSERT_EQ(q.exit_code, 0) << q.out;
    accuracy[i] = bench_json(model, "--dtype f32 --reference " + quoted(kTiny))["accuracy"];
    SCOPED_TRACE(types[i]);
    ASSERT_EQ(accuracy[i]["steps"], kSteps) << accuracy[i].dump();
    // The vision tower is not quantised: at f32 its embeddings are the reference's.
    EXPECT_EQ(accuracy[i]["image_embeds_rel_err"], 0.0);
  }
  const nlohmann::json &q8 = accuracy[0], &q4 = accuracy[1];
  EXPECT_GT(q8["logit_rel_rms_mean"].get<double>(), 0.0);
  EXPECT_LE(q8["logit_rel_rms_max"].get<double>(), kSmallLogitError);
  EXPECT_GE(q8["logit_rel_rms_max"].get<double>(), q8["logit_rel_rms_mean"].get<double>());
  EXPECT_GE(q8["top1_agreement"].get<int>(), kSteps - 1);
  EXPECT_GT(q4["logit_rel_rms_mean"].get<double>(), q8["logit_rel_rms_mean"].get<double>());
}

TEST(BenchAccuracy, Bf16ReportsItsErrorAgainstFloat32ByDefault) {
  if (!fastvlm::kernels::bf16_compute_available()) GTEST_SKIP() << "bf16 compute needs AVX512-BF16";
  const nlohmann::json a = bench_json(kTiny, "--dtype bf16")["accuracy"];
  ASSERT_TRUE(a.is_object());
  EXPECT_EQ(a["reference"], kTiny.string());
  EXPECT_EQ(a["steps"], kSteps);
  EXPECT_GT(a["logit_rel_rms_mean"].get<double>(), 0.0);
  EXPECT_LE(a["logit_rel_rms_max"].get<double>(), kSmallLogitError);
  EXPECT_GT(a["image_embeds_rel_err"].get<double>(), 0.0);
  EXPECT_LE(a["image_embeds_rel_err"].get<double>(), 2e-2);  // the bf16 tower's documented bound

  Result human = run("bench -m " + quoted(kTiny) + " -n 4 --reps 1 --dtype bf16");
  ASSERT_EQ(human.exit_code, 0) << human.out;
  EXPECT_NE(human.out.find("accuracy vs f32"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("top-1 agreement"), std::string::npos) << human.out;

  EXPECT_FALSE(bench_json(kTiny, "--dtype bf16 --no-accuracy").contains("accuracy"));
  EXPECT_FALSE(bench_json(kTiny, "--dtype f32").contains("accuracy"));  // f32 is the reference itself
}

// The default (auto) is compared with f32 unasked, and says what it resolved to; decode is reported as the
// bytes of weights it streams per token over the time per token, and against a given read bandwidth.
TEST(BenchAccuracy, DefaultReportsItsPrecisionAccuracyAndDecodeBandwidth) {
  const nlohmann::json out = bench_json(kTiny, "--read-bandwidth 10");
  EXPECT_EQ(out["precision"].get<std::string>().rfind("auto -> vision ", 0), 0u) << out["precision"];
  ASSERT_TRUE(out.contains("accuracy"));
  EXPECT_EQ(out["accuracy"]["steps"], kSteps);
  // The tiny model's linears: 2 layers of q, k, v, o (64 x 64, 32 x 64 twice, 64 x 64), gate, up, down
  // (128 x 64 twice, 64 x 128), the 151936 x 64 head, one embedding row; as stored or quantised at load.
  const int64_t weights = 2 * (64 * 64 * 2 + 32 * 64 * 2 + 128 * 64 * 3) + 151936LL * 64;
  const int64_t bytes = out["decode_weight_bytes"].get<int64_t>();
  EXPECT_GE(bytes, weights) << "at least a byte per weight";
  EXPECT_LE(bytes, 4 * weights + 64 * 4) << "at most a float per weight";
  const double gbps = out["decode_gbps"].get<double>();
  EXPECT_NEAR(gbps, 1e-6 * double(bytes) / out["timings"]["decode_ms_per_token"].get<double>(), 1e-9 + gbps * 1e-9);
  EXPECT_NEAR(out["decode_bandwidth_fraction"].get<double>(), gbps / 10, 1e-12);
  Result human = run("bench -m " + quoted(kTiny) + " -n 4 --reps 1 --no-accuracy --read-bandwidth 10");
  ASSERT_EQ(human.exit_code, 0) << human.out;
  EXPECT_NE(human.out.find("precision              auto -> "), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("GB/s read bandwidth"), std::string::npos) << human.out;
}

TEST(BenchAccuracy, ReferenceThatIsNotAModelFailsWithOneLine) {
  TempDir dir;
  Result r = run("bench -m " + quoted(kTiny) + " -n 4 --reps 1 --reference " + quoted(dir.path()), true);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("error: --reference " + dir.path().string() + " is not a model directory"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("config.json"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("rep 1"), std::string::npos) << "failed only after timing:\n" << r.out;
}

}  // namespace
