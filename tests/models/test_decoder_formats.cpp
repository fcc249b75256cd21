// The fast weight formats of the decoder on the FastVLM tiny fixture: bf16 (checkpoint bytes in place) and
// Q8_0/Q4_0 checkpoints written by quantize_model, against the float32 goldens. The same tests run again
// in child processes with FASTVLM_ISA=avx2 and =scalar, so every dispatch path goes through the model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "core/cpu.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "golden.h"
#include "io/safetensors.h"
#include "llm/kv_cache.h"
#include "models/quantize.h"
#include "llm/decoder.h"
#include "models/fastvlm/fastvlm_config.h"
#include "llm/sampling.h"
#include "resident_pages.h"

namespace fastvlm {
namespace {

using fastvlm::fixtures::read_golden;

namespace fs = std::filesystem;
const fs::path kFixture = fs::path(FASTVLM_SHARED_DIR) / "fixtures" / "tiny-fastvlm";
const fs::path kGolden = kFixture / "golden";

// Logit tolerance of the bf16 path: activations are rounded to bf16 (8-bit mantissa) before every GEMM
// and GEMV, which on this fixture's O(5) logits moves them by a few hundredths.
constexpr float kBf16LogitMaxAbs = 0.05f;

nlohmann::json golden_json() {
  std::ifstream in(kGolden / "golden.json");
  return nlohmann::json::parse(in);
}

struct CaseInput {
  std::string name;
  std::vector<float> embeds;
  int positions;
  std::vector<float> logits;      // golden last_logits
  std::vector<int32_t> tokens;    // golden greedy tokens
  int exact_through;
};

std::vector<CaseInput> golden_cases(const Decoder& model) {
  const nlohmann::json golden = golden_json();
  std::vector<CaseInput> cases;
  for (const std::string image : {"image_a_320x200", "image_b_97x131"}) {
    const nlohmann::json& e = golden["images"][image];
    const fs::path file = kGolden / e["tensors_file"].get<std::string>();
    cases.push_back({image, read_golden(file, "inputs_embeds"), e["seq_len"].get<int>(), read_golden(file, "last_logits"),
                     e["greedy_tokens"].get<std::vector<int32_t>>(), e["tokens_exact_through"].get<int>()});
  }
  const nlohmann::json& t = golden["text_only"];
  const auto ids = t["ids"].get<std::vector<int32_t>>();
  std::vector<float> embeds(ids.size() * size_t(model.config().hidden_size));
  model.embed(ids, embeds.data());
  cases.push_back({"text_only", std::move(embeds), int(ids.size()),
                   read_golden(kGolden / t["tensors_file"].get<std::string>(), "last_logits"),
                   t["greedy_tokens"].get<std::vector<int32_t>>(), t["tokens_exact_through"].get<int>()});
  return cases;
}

struct RunResult {
  std::vector<float> prefill_logits;
  std::vector<int32_t> tokens;
};

RunResult prefill_and_decode(const Decoder& model, const CaseInput& c) {
  KVCache cache(model.config(), c.positions + int(c.tokens.size()));
  RunResult result;
  result.prefill_logits = model.forward(c.embeds.data(), c.positions, cache);
  std::vector<float> logits = result.prefill_logits;
  Sampler greedy(SamplingParams{});
  std::vector<float> embedding(model.config().hidden_size);
  for (size_t step = 0; step < c.tokens.size(); ++step) {
    const int32_t token = greedy.sample(logits, result.tokens);
    result.tokens.push_back(token);
    if (step + 1 == c.tokens.size()) break;
    model.embed(std::span(&token, 1), embedding.data());
    logits = model.forward(embedding.data(), 1, cache);
  }
  return result;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

// RMS of (a - reference) over RMS of reference.
double relative_rms_error(const std::vector<float>& a, const std::vector<float>& reference) {
  double error = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    error += double(a[i] - reference[i]) * (a[i] - reference[i]);
    norm += double(reference[i]) * reference[i];
  }
  return std::sqrt(error / norm);
}

int agreeing_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  int n = 0;
  while (n < int(std::min(a.size(), b.size())) && a[n] == b[n]) ++n;
  return n;
}

TEST(Qwen2Bf16, ReproducesTheGoldenGreedyTokens) {
  const auto checkpoint = Checkpoint::open(kFixture);
  const auto model = Decoder::load(*checkpoint, load_fastvlm_config(kFixture).text, Precision::Bf16);
  std::printf("ISA path: %s\n", std::string(isa_name(active_isa())).c_str());
  for (const CaseInput& c : golden_cases(*model)) {
    SCOPED_TRACE(c.name);
    const RunResult run = prefill_and_decode(*model, c);
    const float error = max_abs_diff(run.prefill_logits, c.logits);
    std::printf("bf16 %-16s logits max|diff| %.4f, relative RMS %.2e, greedy agrees on %d/%zu\n", c.name.c_str(),
                error, relative_rms_error(run.prefill_logits, c.logits), agreeing_prefix(run.tokens, c.tokens),
                c.tokens.size());
    EXPECT_LE(error, kBf16LogitMaxAbs);
    for (int step = 0; step <= c.exact_through && step < int(c.tokens.size()); ++step)
      ASSERT_EQ(run.tokens[step], c.tokens[step]) << "greedy token at step " << step;
  }
}

class Qwen2Quantized : public ::testing::TestWithParam<WeightType> {};

TEST_P(Qwen2Quantized, QuantisedCheckpointLoadsAndStaysCloseToFloat32) {
  const WeightType type = GetParam();
  const fs::path out = fs::temp_directory_path() /
                       ("fastvlm-quant-" + std::string(weight_type_name(type)) + "-" + std::to_string(getpid()));
  fs::remove_all(out);
  const QuantizeSummary summary = quantize_model(kFixture, out, type);
  EXPECT_EQ(summary.linears, 2 * 7 + 1);  // 7 projections per layer, 2 layers, lm_head
  EXPECT_THROW(quantize_model(kFixture, out, type), Error);  // refuses a non-empty output directory

  const auto checkpoint = Checkpoint::open(out);
  EXPECT_EQ(checkpoint->quantization().type, weight_type_name(type));
  EXPECT_TRUE(fs::exists(out / "vocab.json"));
  EXPECT_TRUE(checkpoint->has("model.mm_projector.0.weight"));  // the rest is carried over
  const auto model = Decoder::load(*checkpoint, load_fastvlm_config(out).text, Precision::F32);
  // Error budget: Q8_0 keeps ~0.4% per weight, Q4_0 ~7%; both then see int8 activations in decode.
  const double max_rms = type == WeightType::Q8_0 ? 0.025 : 0.25;
  for (const CaseInput& c : golden_cases(*model)) {
    SCOPED_TRACE(c.name);
    const RunResult run = prefill_and_decode(*model, c);
    const double rms = relative_rms_error(run.prefill_logits, c.logits);
    const int agree = agreeing_prefix(run.tokens, c.tokens);
    std::printf("%s %-16s logits relative RMS error vs f32 %.2e (max|diff| %.3f), greedy agrees on %d/%zu\n",
                std::string(weight_type_name(type)).c_str(), c.name.c_str(), rms,
                max_abs_diff(run.prefill_logits, c.logits), agree, c.tokens.size());
    EXPECT_LT(rms, max_rms);
    if (type == WeightType::Q8_0) {
      EXPECT_GE(agree, 1) << "the first greedy token";
    }
  }
  fs::remove_all(out);
}

// The default load of a dense checkpoint quantises each linear slab by slab and gives back each slab's
// float pages as it goes; a quantised checkpoint's codes are moved into the model's own (huge-page)
// memory, their file pages given back too. lm_head, the fixture's one linear spanning many pages, must
// have none of its pages mapped in either checkpoint after the load, nor after the model has run (they
// would be back if anything still read the released weights: a released page is re-read from the file on
// the next touch, so the answers alone would not show it). The codes quantised at load are the ones
// `fastvlm quantize` writes, so the answers equal those of the moved codes, logit for logit (a code moved
// to the wrong place would not).
TEST_P(Qwen2Quantized, LoadsGiveBackTheMappedPagesAndQuantisingAtLoadAnswersAsTheQuantisedCheckpoint) {
  const WeightType type = GetParam();
  const fs::path out = fs::temp_directory_path() /
                       ("fastvlm-atload-" + std::string(weight_type_name(type)) + "-" + std::to_string(getpid()));
  fs::remove_all(out);
  quantize_model(kFixture, out, type);
  const TextConfig config = load_fastvlm_config(kFixture).text;
  // A page fault maps its aligned 64 KiB neighbourhood (the kernel's fault-around) where the page cache
  // has it, and where the page cache holds large folios (ext4 from Linux 6.16) the whole folio, up to 2 MiB:
  // reads of the neighbouring tensors may bring back that much of lm_head's edges. (On Linux 6.18, ext4, a
  // 64 KiB margin left 129 pages of the stored codes mapped after the models had run, before any change here.)
  constexpr size_t kFaultAround = 2 << 20;
  struct Span {
    const uint8_t *begin, *end;
  };
  auto far_from_the_edges = [&](const TensorInfo& tensor) {
    return Span{tensor.data + kFaultAround, tensor.data + tensor.nbytes - kFaultAround};
  };
  const auto quantised_checkpoint = Checkpoint::open(out);
  const Span codes = far_from_the_edges(quantised_checkpoint->tensor(
      "lm_head.weight", {config.vocab_size, quant_row_bytes(type, config.hidden_size)}));
  const auto quantised = Decoder::load(*quantised_checkpoint, config, Precision::Bf16);
  EXPECT_EQ(resident_pages(codes.begin, codes.end), 0u) << "lm_head's stored codes after the load";

  const auto checkpoint = Checkpoint::open(kFixture);
  const Span floats = far_from_the_edges(checkpoint->tensor("lm_head.weight", {config.vocab_size, config.hidden_size}));
  const auto at_load = Decoder::load(*checkpoint, config, Precision::Bf16, type);
  EXPECT_EQ(resident_pages(floats.begin, floats.end), 0u) << "lm_head's float pages after the load";

  for (const CaseInput& c : golden_cases(*at_load)) {
    SCOPED_TRACE(c.name);
    const RunResult expected = prefill_and_decode(*quantised, c);
    const RunResult run = prefill_and_decode(*at_load, c);
    EXPECT_EQ(run.prefill_logits, expected.prefill_logits);
    EXPECT_EQ(run.tokens, expected.tokens);
  }
  EXPECT_EQ(resident_pages(floats.begin, floats.end), 0u) << "lm_head's float pages after running the models";
  EXPECT_EQ(resident_pages(codes.begin, codes.end), 0u) << "lm_head's stored codes after running the models";
  fs::remove_all(out);
}

INSTANTIATE_TEST_SUITE_P(Formats, Qwen2Quantized, ::testing::Values(WeightType::Q8_0, WeightType::Q4_0),
                         [](const auto& info) { return std::string(weight_type_name(info.param)); });

TEST(Qwen2Formats, LowerInstructionSetPathsPassTheSameTests) {
  if (std::getenv("FASTVLM_ISA")) GTEST_SKIP() << "already a child run";
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  for (Isa isa : {Isa::Avx2, Isa::Scalar}) {
    if (isa > detected_isa()) continue;
    const std::string command = "FASTVLM_ISA=" + std::string(isa_name(isa)) + " '" + self +
                                "' --gtest_filter='Qwen2Bf16.*:Formats/Qwen2Quantized.*' > /dev/null 2>&1";
    EXPECT_EQ(std::system(command.c_str()), 0) << "failed with FASTVLM_ISA=" << isa_name(isa) << ": rerun  " << command;
  }
}

TEST(Qwen2Formats, QuantisedConfigRecordIsValidated) {
  const fs::path dir = fs::temp_directory_path() / ("fastvlm-badquant-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  nlohmann::json config = nlohmann::json::parse(std::ifstream(kFixture / "config.json"));
  config["quantization"] = {{"type", "q3_k"}, {"group_size", 32}};
  std::ofstream(dir / "config.json") << config.dump();
  fs::create_symlink(kFixture / "model.safetensors", dir / "model.safetensors");
  try {
    Checkpoint::open(dir);
    ADD_FAILURE() << "an unknown quantisation type loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("quantization.type"), std::string::npos) << e.what();
  }
  // A config claiming quantisation over dense tensors fails naming the tensor's dtype.
  config["quantization"] = {{"type", "q8_0"}, {"group_size", 32}};
  std::ofstream(dir / "config.json") << config.dump();
  try {
    Decoder::load(*Checkpoint::open(dir), load_fastvlm_config(dir).text, Precision::F32);
    ADD_FAILURE() << "dense tensors loaded as q8_0";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected I8"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fastvlm
