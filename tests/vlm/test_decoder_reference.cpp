// The text-only decoders (Qwen2ForCausalLM, LlamaForCausalLM) against an independent float64 reference
// of Hugging Face's semantics (decoder_reference.h). The fixtures' goldens pin the reference itself;
// the reference then stands in for goldens on random checkpoints of other shapes (untied heads, no GQA,
// MQA, head_dim != hidden/heads, linear and llama3 rope scaling, rope_parameters, biases everywhere),
// which the test writes in the exact Hugging Face layout and loads through the public C++ API.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <ostream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "core/dtype.h"
#include "core/error.h"
#include "decoder_reference.h"
#include "fastvlm/fastvlm.hpp"
#include "golden.h"
#include "io/safetensors.h"
#include "text/tokenizer.h"

namespace fs = std::filesystem;
using fastvlm::reference::DecoderReference;
using fastvlm::reference::GreedyRun;
using nlohmann::json;

namespace {

const fs::path kFixtures = fs::path(FASTVLM_SHARED_DIR) / "fixtures";

// The Qwen2 tokenizer's ids (151643 vocabulary + 3 added tokens); the embedding is padded past it.
constexpr int kQwen2TokenizerVocab = 151646;

// max|a - b| over the first n entries, and max|reference| there.
struct Diff {
  double max_abs = 0, scale = 0;
  double relative() const { return max_abs / scale; }
};
template <class A, class B>
Diff diff(const A& actual, const B& reference, size_t n) {
  Diff d;
  for (size_t i = 0; i < n; ++i) {
    d.max_abs = std::max(d.max_abs, std::fabs(double(actual[i]) - double(reference[i])));
    d.scale = std::max(d.scale, std::fabs(double(reference[i])));
  }
  return d;
}

// ---------------------------------------------------------------------------------------------------
// 1-2. The reference against the fixtures' goldens (made by a separate plain-PyTorch reference).

void check_reference_against_goldens(const std::string& fixture) {
  const fs::path dir = kFixtures / fixture;
  const json golden = json::parse(std::ifstream(dir / "golden" / "golden.json"));
  const DecoderReference ref = DecoderReference::load(dir);
  const double tolerance = golden["tolerances"]["last_logits"]["max_abs_over_absmax"].get<double>();
  ASSERT_FALSE(golden["cases"].empty());
  for (const json& entry : golden["cases"]) {
    const std::string name = entry["case"].get<std::string>();
    SCOPED_TRACE(fixture + " case " + name);
    const auto prompt = entry["prompt_ids"].get<std::vector<int32_t>>();
    const auto tokens = entry["tokens"].get<std::vector<int32_t>>();
    const GreedyRun run = ref.greedy(prompt, int(tokens.size()), kQwen2TokenizerVocab);

    const std::vector<float> expected =
        fastvlm::fixtures::read_golden(dir / "golden" / "goldens.safetensors", name + ".last_logits");
    ASSERT_EQ(expected.size(), run.step_logits[0].size());
    const Diff d = diff(run.step_logits[0], expected, expected.size());
    EXPECT_LE(d.relative(), tolerance) << "max abs " << d.max_abs << " of " << d.scale;
    // The goldens' greedy tokens are exact (their float64 re-run agrees), so all of them must match.
    EXPECT_EQ(run.tokens, tokens);
  }
}

TEST(DecoderReference, MatchesQwen2TextGoldens) { check_reference_against_goldens("tiny-qwen2-text"); }

TEST(DecoderReference, MatchesLlamaGoldens) { check_reference_against_goldens("tiny-llama"); }

// A third, independent golden: the tiny-fastvlm text-only prompt through its (untied, Qwen2) language
// model, greedy over the whole padded vocabulary as that golden was made.
TEST(DecoderReference, MatchesTinyFastvlmTextOnlyGolden) {
  const fs::path dir = kFixtures / "tiny-fastvlm";
  const json golden = json::parse(std::ifstream(dir / "golden" / "golden.json"));
  const json& text = golden["text_only"];
  const auto prompt = text["ids"].get<std::vector<int32_t>>();
  const auto tokens = text["greedy_tokens"].get<std::vector<int32_t>>();
  const DecoderReference ref = DecoderReference::load(dir);
  const GreedyRun run = ref.greedy(prompt, int(tokens.size()), ref.config().vocab);
  const std::vector<float> expected =
      fastvlm::fixtures::read_golden(dir / "golden" / text["tensors_file"].get<std::string>(), "last_logits");
  ASSERT_EQ(expected.size(), run.step_logits[0].size());
  EXPECT_LE(diff(run.step_logits[0], expected, expected.size()).max_abs,
            golden["tolerances"]["last_logits"]["max_abs"].get<double>());
  const size_t exact = text["tokens_exact_through"].get<size_t>() + 1;
  EXPECT_EQ(std::vector<int32_t>(run.tokens.begin(), run.tokens.begin() + exact),
            std::vector<int32_t>(tokens.begin(), tokens.begin() + exact));
}

// The llama3 scaling has three regimes; the tiny-llama config was chosen to hit all of them, so the
// goldens above only pin the formula if that is still so.
TEST(DecoderReference, TinyLlamaRopeExercisesEveryLlama3Regime) {
  const auto config = fastvlm::reference::parse_config(json::parse(std::ifstream(kFixtures / "tiny-llama" / "config.json")));
  ASSERT_EQ(config.rope_type, "llama3");
  fastvlm::reference::DecoderConfig plain = config;
  plain.rope_type = "default";
  const auto scaled = fastvlm::reference::rope_inv_freq(config), base = fastvlm::reference::rope_inv_freq(plain);
  int kept = 0, divided = 0, blended = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    const double ratio = scaled[i] / base[i];
    if (std::fabs(ratio - 1) < 1e-12) ++kept;
    else if (std::fabs(ratio - 1 / config.rope_factor) < 1e-12) ++divided;
    else if (ratio > 1 / config.rope_factor && ratio < 1) ++blended;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
  EXPECT_EQ(kept + divided + blended, int(base.size()));
}

// ---------------------------------------------------------------------------------------------------
// 3. Random checkpoints in the Hugging Face layout.

// A seeded generator independent of the standard library's distributions (whose algorithms are
// implementation-defined), so every platform writes the same checkpoint: splitmix64 + Box-Muller.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return (double(next() >> 11) + 0.5) * 0x1.0p-53; }  // in (0, 1)
  double normal() {
    return std::sqrt(-2 * std::log(uniform())) * std::cos(2 * M_PI * uniform());
  }

 private:
  uint64_t state_;
};

struct CheckpointCase {
  std::string name;
  json config;
  uint64_t seed;
};

// gtest prints a failing parameter with this, not as a byte dump.
void PrintTo(const CheckpointCase& c, std::ostream* os) { *os << c.name; }

json base_config(const std::string& model_type, int hidden, int intermediate, int layers, int heads,
                 int kv_heads, int vocab) {
  json c = {
      {"architectures", {model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", model_type},
      {"hidden_size", hidden},
      {"intermediate_size", intermediate},
      {"num_hidden_layers", layers},
      {"num_attention_heads", heads},
      {"num_key_value_heads", kv_heads},
      {"vocab_size", vocab},
      {"max_position_embeddings", 4096},
      {"hidden_act", "silu"},
      {"rms_norm_eps", 1e-6},
      {"torch_dtype", "bfloat16"},
      {"bos_token_id", 151643},
      // <|endoftext|>, as Qwen2 base configs have it; greedy over random weights is unlikely to hit it,
      // and the engine's tokens are compared only as far as it generated.
      {"eos_token_id", 151643},
  };
  if (model_type == "qwen2") {
    // As Qwen2/2.5 configs ship them: the window keys present, sliding attention off.
    c["use_sliding_window"] = false;
    c["sliding_window"] = 4096;
    c["max_window_layers"] = layers;
  }
  return c;
}

std::vector<CheckpointCase> checkpoint_cases() {
  std::vector<CheckpointCase> cases;
  {  // (a) Qwen2, untied lm_head, 3 layers, GQA 6:2, rope_theta 1e4.
    json c = base_config("qwen2", 96, 224, 3, 6, 2, 151936);
    c["rope_theta"] = 10000.0;
    c["tie_word_embeddings"] = false;
    cases.push_back({"qwen2_untied_gqa", c, 101});
  }
  {  // (b) Qwen2, tied, 1 layer, 8 heads 8 KV heads (no GQA); an embedding padded less than Qwen2's.
    json c = base_config("qwen2", 128, 320, 1, 8, 8, 151680);
    c["rope_theta"] = 1000000.0;
    c["tie_word_embeddings"] = true;
    cases.push_back({"qwen2_tied_mha", c, 202});
  }
  {  // (c) Llama with every optional bias, linear rope scaling, MQA (4 heads, 1 KV head).
    json c = base_config("llama", 128, 352, 2, 4, 1, 151936);
    c["rms_norm_eps"] = 1e-5;
    c["rope_theta"] = 10000.0;
    c["attention_bias"] = true;
    c["mlp_bias"] = true;
    c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 4.0}};
    c["tie_word_embeddings"] = false;
    cases.push_back({"llama_biases_linear_mqa", c, 303});
  }
  {  // (d) Llama, explicit head_dim 32 != 64/4 (q is 128 wide, o_proj maps 128 -> 64), llama3 scaling
     //     with a 32-position original context that the prompt runs past.
    json c = base_config("llama", 64, 192, 2, 4, 2, 151936);
    c["rms_norm_eps"] = 1e-5;
    c["head_dim"] = 32;
    c["rope_theta"] = 500000.0;
    c["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 32}};
    c["attention_bias"] = false;
    c["mlp_bias"] = false;
    c["tie_word_embeddings"] = false;
    cases.push_back({"llama_head_dim_llama3", c, 404});
  }
  {  // (e) Llama as transformers >= 5 writes it: rope_scaling null, theta only in rope_parameters.
    json c = base_config("llama", 96, 256, 2, 6, 3, 151936);
    c["rope_scaling"] = nullptr;
    c["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "default"}};
    c["attention_bias"] = false;
    c["mlp_bias"] = false;
    c["tie_word_embeddings"] = false;
    cases.push_back({"llama_rope_parameters", c, 505});
  }
  {  // (f) As (e), but with a theta and a scaling that differ from the defaults, so an engine that
     //     overlooked rope_parameters would be caught (in (e) the given theta is the default one).
    json c = base_config("llama", 96, 256, 2, 6, 2, 151936);
    c["rope_parameters"] = {{"rope_theta", 1000000.0}, {"rope_type", "linear"}, {"factor", 2.0}};
    c["attention_bias"] = false;
    c["mlp_bias"] = false;
    c["tie_word_embeddings"] = false;
    cases.push_back({"llama_rope_parameters_scaled", c, 707});
  }
  {  // (g) Llama without num_key_value_heads (Llama-1-era configs): HF defaults it to the head count;
     //     tied embeddings as Llama 3.2 1B/3B have them.
    json c = base_config("llama", 64, 160, 2, 4, 4, 151936);
    c.erase("num_key_value_heads");
    c["rope_theta"] = 10000.0;
    c["tie_word_embeddings"] = true;
    cases.push_back({"llama_default_kv_heads_tied", c, 606});
  }
  return cases;
}

// Writes config.json, generation_config.json, model.safetensors (bf16, HF tensor names) and the Qwen2
// tokenizer files into `dir`. Tensors named in `omit` are left out (for the bad-input checks). Shapes
// and which biases exist follow the reference's reading of the config, so writer and reader agree on
// the HF rules by construction; the values are N(0, std) rounded to bf16, norm weights around 1.
void write_checkpoint(const fs::path& dir, const json& config, uint64_t seed,
                      const std::set<std::string>& omit = {}) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump(2);
  std::ofstream(dir / "generation_config.json")
      << json{{"bos_token_id", 151643}, {"eos_token_id", config["eos_token_id"]}}.dump(2);
  for (const char* file : {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"})
    fs::copy_file(kFixtures / "qwen2-tokenizer" / file, dir / file, fs::copy_options::overwrite_existing);

  const auto c = fastvlm::reference::parse_config(config);
  Rng rng(seed);
  std::vector<std::vector<uint16_t>> storage;  // keeps the bytes alive until written
  std::vector<fastvlm::TensorToWrite> tensors;
  auto add = [&](const std::string& name, fastvlm::Shape shape, double mean, double std) {
    std::vector<uint16_t> bits(fastvlm::shape_numel(shape));
    for (uint16_t& b : bits) b = fastvlm::f32_to_bf16(float(mean + std * rng.normal()));
    if (omit.count(name)) return;  // still drawn, so omitting one tensor leaves the others unchanged
    storage.push_back(std::move(bits));
    tensors.push_back({name, fastvlm::DType::BF16, shape, storage.back().data(), storage.back().size() * 2});
  };
  storage.reserve(16 * c.layers + 8);
  const int64_t qd = int64_t(c.heads) * c.head_dim, kvd = int64_t(c.kv_heads) * c.head_dim;
  add("model.embed_tokens.weight", {c.vocab, c.hidden}, 0, 0.05);
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {c.hidden}, 1, 0.1);
    add(p + "post_attention_layernorm.weight", {c.hidden}, 1, 0.1);
    // q and k a little larger, so attention is far from uniform and position (RoPE) errors show.
    add(p + "self_attn.q_proj.weight", {qd, c.hidden}, 0, 0.08);
    add(p + "self_attn.k_proj.weight", {kvd, c.hidden}, 0, 0.08);
    add(p + "self_attn.v_proj.weight", {kvd, c.hidden}, 0, 0.05);
    add(p + "self_attn.o_proj.weight", {c.hidden, qd}, 0, 0.05);
    if (c.qkv_bias) {
      add(p + "self_attn.q_proj.bias", {qd}, 0, 0.05);
      add(p + "self_attn.k_proj.bias", {kvd}, 0, 0.05);
      add(p + "self_attn.v_proj.bias", {kvd}, 0, 0.05);
    }
    if (c.o_bias) add(p + "self_attn.o_proj.bias", {c.hidden}, 0, 0.05);
    add(p + "mlp.gate_proj.weight", {c.intermediate, c.hidden}, 0, 0.05);
    add(p + "mlp.up_proj.weight", {c.intermediate, c.hidden}, 0, 0.05);
    add(p + "mlp.down_proj.weight", {c.hidden, c.intermediate}, 0, 0.05);
    if (c.mlp_bias) {
      add(p + "mlp.gate_proj.bias", {c.intermediate}, 0, 0.05);
      add(p + "mlp.up_proj.bias", {c.intermediate}, 0, 0.05);
      add(p + "mlp.down_proj.bias", {c.hidden}, 0, 0.05);
    }
  }
  add("model.norm.weight", {c.hidden}, 1, 0.1);
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab, c.hidden}, 0, 0.05);
  fastvlm::write_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
}

// One temporary folder per test process, removed when the tests end.
class TempRoot : public ::testing::Environment {
 public:
  static fs::path path() {
    static const fs::path root = [] {
      fs::path p = fs::temp_directory_path() / ("fastvlm_decoder_ref_" + std::to_string(getpid()));
      fs::remove_all(p);
      fs::create_directories(p);
      return p;
    }();
    return root;
  }
  void TearDown() override { fs::remove_all(path()); }
};
const auto* const kTempRoot = ::testing::AddGlobalTestEnvironment(new TempRoot);

// The checkpoint of `c`, written on first use.
fs::path checkpoint_dir(const CheckpointCase& c) {
  const fs::path dir = TempRoot::path() / c.name;
  if (!fs::exists(dir / "model.safetensors")) write_checkpoint(dir, c.config, c.seed);
  return dir;
}

// ~80 ids of mixed text: ChatML specials (parsed as tokens, as HF does), CJK, Cyrillic, emoji, digits,
// tabs and newlines; longer than case (d)'s 32-position original rope context.
const std::string kPrompt =
    "<|im_start|>user\nThe quick brown fox jumps over 13 lazy dogs; 東京の天気は晴れ 🌤️.\n"
    "\tTabs, \"quotes\" and 3.14159 — naïve café, Привет мир!<|im_end|>\n"
    "<|im_start|>assistant\nSure. Here is a list:\n1. apples\n2. Äpfel\n3. 苹果 🍎";

constexpr int kSteps = 8;

struct ReferenceResult {
  std::vector<int32_t> prompt;
  GreedyRun run;
};

// The reference's answer for a case, computed once per process.
const ReferenceResult& reference_result(const CheckpointCase& c) {
  static std::map<std::string, ReferenceResult> cache;
  auto it = cache.find(c.name);
  if (it != cache.end()) return it->second;
  const fs::path dir = checkpoint_dir(c);
  ReferenceResult r;
  r.prompt = fastvlm::text::Tokenizer::load(dir)->encode(kPrompt);
  r.run = DecoderReference::load(dir).greedy(r.prompt, kSteps, kQwen2TokenizerVocab);
  return cache.emplace(c.name, std::move(r)).first->second;
}

class RandomCheckpoint : public ::testing::TestWithParam<CheckpointCase> {};

std::string case_name(const ::testing::TestParamInfo<CheckpointCase>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Decoders, RandomCheckpoint, ::testing::ValuesIn(checkpoint_cases()), case_name);

// The written checkpoint is what it should be and gives the comparison something to bite on: the
// reference reads it back, its logits are finite and spread out, and the first step is not a near tie.
TEST_P(RandomCheckpoint, ReferenceRunsOnWrittenCheckpoint) {
  const CheckpointCase& c = GetParam();
  const fs::path dir = checkpoint_dir(c);
  auto st = fastvlm::SafetensorsFile::open(dir / "model.safetensors");
  for (const auto& t : st->tensors()) EXPECT_EQ(t.dtype, fastvlm::DType::BF16) << t.name;
  EXPECT_NE(st->find("model.embed_tokens.weight"), nullptr);
  EXPECT_EQ(st->find("lm_head.weight") != nullptr, !c.config["tie_word_embeddings"].get<bool>());

  const ReferenceResult& r = reference_result(c);
  ASSERT_GE(r.prompt.size(), 40u);
  ASSERT_LE(r.prompt.size(), 100u);
  EXPECT_EQ(std::count(r.prompt.begin(), r.prompt.end(), 151644), 2) << "<|im_start|> parsed as a token";
  ASSERT_EQ(r.run.tokens.size(), size_t(kSteps));
  const std::vector<double>& logits = r.run.step_logits[0];
  double lo = logits[0], hi = logits[0];
  for (double v : logits) {
    ASSERT_TRUE(std::isfinite(v));
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  EXPECT_GT(hi - lo, 1.0);
  EXPECT_GT(r.run.margins[0], 1e-3);
}

// The reference of case (d) must run past the llama3 original context for the case to mean anything.
TEST(RandomCheckpointSetup, LongerThanLlama3OriginalContext) {
  for (const CheckpointCase& c : checkpoint_cases()) {
    if (!c.config.contains("rope_scaling") || !c.config["rope_scaling"].is_object()) continue;
    if (c.config["rope_scaling"]["rope_type"] != "llama3") continue;
    const int original = c.config["rope_scaling"]["original_max_position_embeddings"].get<int>();
    EXPECT_GT(int(reference_result(c).prompt.size()) + kSteps, original + 16) << c.name;
  }
}

// The comparison below can tell the rope variants apart: on the cases that scale the rope or set theta
// in rope_parameters, the same checkpoint read with no scaling, with linear scaling in place of llama3,
// or with the default theta, moves the last-position logits by far more than the f32 tolerance (1e-3
// of the largest).
TEST(RandomCheckpointSetup, RopeReadingChangesTheLogits) {
  using Adjust = std::function<void(fastvlm::reference::DecoderConfig&)>;
  int checked = 0;
  for (const CheckpointCase& c : checkpoint_cases()) {
    SCOPED_TRACE(c.name);
    const json& j = c.config;
    json rope = j.contains("rope_parameters") ? j["rope_parameters"] : j.value("rope_scaling", json());
    std::vector<std::pair<std::string, Adjust>> wrong;
    if (rope.is_object() && rope.value("rope_type", "default") != "default")
      wrong.emplace_back("no scaling", [](auto& config) { config.rope_type = "default"; });
    if (rope.is_object() && rope.value("rope_type", "default") == "llama3")
      wrong.emplace_back("linear", [](auto& config) { config.rope_type = "linear"; });
    if (j.contains("rope_parameters") && rope.value("rope_theta", 10000.0) != 10000.0)
      wrong.emplace_back("default theta", [](auto& config) { config.rope_theta = 10000.0; });
    if (wrong.empty()) continue;
    const ReferenceResult& r = reference_result(c);
    const auto& expected = r.run.step_logits[0];
    for (const auto& [what, adjust] : wrong) {
      const GreedyRun run = DecoderReference::load(checkpoint_dir(c), adjust).greedy(r.prompt, 1, kQwen2TokenizerVocab);
      EXPECT_GT(diff(run.step_logits[0], expected, expected.size()).relative(), 1e-2) << what;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 5);
}

// ---------------------------------------------------------------------------------------------------
// 4. The engine against the reference, through the public API.

fastvlm::Generation run_engine(const fs::path& dir, fastvlm::Precision precision) {
  fastvlm::EngineOptions options;
  options.precision = precision;
  options.context = 512;
  auto engine = fastvlm::Engine::load(dir.string(), options);
  fastvlm::Session session(*engine);
  fastvlm::GenerateOptions generate;
  generate.max_tokens = kSteps;
  generate.keep_logits = true;
  return session.complete(kPrompt, generate);
}

// Compares the engine's steps with the reference's while they see the same tokens: logits within
// `tolerance` x max|logit| at every step, tokens identical while the reference's top-1/top-2 margin
// exceeds max(margin_abs, margin_rel x max|logit|) (past a near tie either choice is right, and the
// runs may part).
void check_engine(const CheckpointCase& c, fastvlm::Precision precision, double tolerance, double margin_abs,
                  double margin_rel) {
  const ReferenceResult& r = reference_result(c);
  const fastvlm::Generation g = run_engine(checkpoint_dir(c), precision);
  EXPECT_EQ(g.prompt_tokens, int(r.prompt.size())) << "the engine tokenized the prompt differently";
  ASSERT_FALSE(g.token_ids.empty());
  ASSERT_EQ(g.step_logits.size(), g.token_ids.size());
  if (g.token_ids.size() < size_t(kSteps)) {
    EXPECT_EQ(g.stop_reason, fastvlm::StopReason::EndOfTurn);
  }
  for (size_t s = 0; s < g.token_ids.size(); ++s) {
    SCOPED_TRACE("step " + std::to_string(s));
    ASSERT_EQ(g.step_logits[s].size(), size_t(kQwen2TokenizerVocab));
    const Diff d = diff(g.step_logits[s], r.run.step_logits[s], kQwen2TokenizerVocab);
    EXPECT_LE(d.relative(), tolerance) << "max abs " << d.max_abs << " of " << d.scale;
    if (r.run.margins[s] > std::max(margin_abs, margin_rel * d.scale)) {
      ASSERT_EQ(g.token_ids[s], r.run.tokens[s]) << "reference margin " << r.run.margins[s];
    } else if (g.token_ids[s] != r.run.tokens[s]) {
      break;  // a near tie went the other way: the runs part here, and both are right
    }
  }
}

TEST_P(RandomCheckpoint, EngineF32MatchesReference) {
  // The goldens' rule: tokens identical where the margin exceeds 1e-3.
  check_engine(GetParam(), fastvlm::Precision::F32, 1e-3, 1e-3, 0);
}

TEST_P(RandomCheckpoint, EngineBf16MatchesReference) {
  try {
    // Two logits each off by up to the bound can swap where the margin is under twice the bound.
    check_engine(GetParam(), fastvlm::Precision::Bf16, 3e-2, 0, 2 * 3e-2);
  } catch (const fastvlm::Error& e) {
    if (std::string(e.what()).find("CPU lacks") != std::string::npos) GTEST_SKIP() << e.what();
    throw;
  }
}

// ---------------------------------------------------------------------------------------------------
// 5. Bad checkpoints: one-line fastvlm::Error naming the file and key (or tensor).

std::string load_error(const fs::path& dir) {
  try {
    fastvlm::EngineOptions options;
    options.context = 64;
    fastvlm::Engine::load(dir.string(), options);
  } catch (const fastvlm::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "Engine::load(" << dir << ") succeeded";
  return {};
}

// A small valid checkpoint of `config`, then `mutate` applied to its config.json.
fs::path bad_checkpoint(const std::string& name, json config, const std::function<void(json&)>& mutate,
                        const std::set<std::string>& omit = {}) {
  const fs::path dir = TempRoot::path() / ("bad_" + name);
  write_checkpoint(dir, config, 7, omit);
  mutate(config);
  std::ofstream(dir / "config.json") << config.dump(2);
  return dir;
}

void expect_one_line_naming(const std::string& message, std::initializer_list<std::string> parts) {
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  for (const std::string& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
}

// Valid but for the one mutation each test makes (the RoPE base is required: there is no silent default).
json with_rope_theta(json config) {
  config["rope_theta"] = 10000.0;
  return config;
}
json small_qwen2() { return with_rope_theta(base_config("qwen2", 64, 128, 1, 4, 2, 151936)); }
json small_llama() { return with_rope_theta(base_config("llama", 64, 128, 1, 4, 2, 151936)); }

TEST(DecoderBadInput, MissingRopeBase) {
  const auto dir = bad_checkpoint("rope_theta", small_llama(), [](json& c) { c.erase("rope_theta"); });
  expect_one_line_naming(load_error(dir), {"config.json", "rope_theta"});
}

TEST(DecoderBadInput, UnknownModelType) {
  const auto dir = bad_checkpoint("model_type", small_qwen2(), [](json& c) { c["model_type"] = "gpt_neox"; });
  expect_one_line_naming(load_error(dir), {"config.json", "model_type", "gpt_neox"});
}

TEST(DecoderBadInput, MissingRequiredKey) {
  const auto dir = bad_checkpoint("missing_key", small_llama(), [](json& c) { c.erase("num_attention_heads"); });
  expect_one_line_naming(load_error(dir), {"config.json", "num_attention_heads"});
}

TEST(DecoderBadInput, MissingBiasTensor) {
  json config = small_llama();
  config["attention_bias"] = true;
  const auto dir = bad_checkpoint("missing_bias", config, [](json&) {},
                                  {"model.layers.0.self_attn.q_proj.bias"});
  expect_one_line_naming(load_error(dir), {"model.layers.0.self_attn.q_proj.bias"});
}

TEST(DecoderBadInput, UnknownRopeType) {
  const auto dir = bad_checkpoint("rope_type", small_llama(), [](json& c) {
    c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 64}};
  });
  expect_one_line_naming(load_error(dir), {"config.json", "rope", "yarn"});
}

TEST(DecoderBadInput, SlidingWindowQwen2) {
  const auto dir = bad_checkpoint("sliding_window", small_qwen2(), [](json& c) { c["use_sliding_window"] = true; });
  expect_one_line_naming(load_error(dir), {"config.json", "use_sliding_window"});
}

}  // namespace
