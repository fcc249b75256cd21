// The decoder graph on the FastVLM tiny fixture's Qwen2 against its goldens (an independent PyTorch-style reference in float32).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/error.h"
#include "io/checkpoint.h"
#include "golden.h"
#include "io/safetensors.h"
#include "llm/kv_cache.h"
#include "llm/decoder.h"
#include "models/fastvlm/fastvlm_config.h"
#include "llm/sampling.h"

namespace fastvlm {
namespace {

using fastvlm::fixtures::read_golden;

const std::filesystem::path kFixture = std::filesystem::path(FASTVLM_SHARED_DIR) / "fixtures" / "tiny-fastvlm";
const std::filesystem::path kGolden = kFixture / "golden";

float max_abs_diff(std::span<const float> a, std::span<const float> b) {
  EXPECT_EQ(a.size(), b.size());
  float worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

float max_abs(std::span<const float> a) {
  float largest = 0;
  for (float v : a) largest = std::max(largest, std::fabs(v));
  return largest;
}

// The `k` largest values in decreasing order.
std::vector<float> top_values(std::span<const float> logits, size_t k) {
  std::vector<float> sorted(logits.begin(), logits.end());
  std::partial_sort(sorted.begin(), sorted.begin() + k, sorted.end(), std::greater<>());
  sorted.resize(k);
  return sorted;
}

class Qwen2Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    checkpoint_ = Checkpoint::open(kFixture).release();
    model_ = Decoder::load(*checkpoint_, load_fastvlm_config(kFixture).text, Precision::F32).release();
    std::ifstream in(kGolden / "golden.json");
    golden_ = new nlohmann::json(nlohmann::json::parse(in));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete checkpoint_;
    delete golden_;
  }

  static float logits_tolerance() { return (*golden_)["tolerances"]["last_logits"]["max_abs"].get<float>(); }
  static float topk_tolerance() { return (*golden_)["tolerances"]["topk_vals"]["max_abs"].get<float>(); }

  // Greedy decoding with the KV cache, one token per step, starting from the prefill logits; checks the
  // tokens against `expected["greedy_tokens"]` through tokens_exact_through and each step's top-5 values.
  void expect_greedy_continuation(std::vector<float> logits, KVCache& cache, const nlohmann::json& expected) {
    const auto tokens = expected["greedy_tokens"].get<std::vector<int32_t>>();
    const auto top_vals = expected["topk_vals"].get<std::vector<std::vector<float>>>();
    const int exact_through = expected["tokens_exact_through"].get<int>();
    Sampler greedy(SamplingParams{});  // temperature 0
    std::vector<int32_t> generated;
    std::vector<float> embedding(model_->config().hidden_size);
    for (size_t step = 0; step < tokens.size(); ++step) {
      const std::vector<float> top = top_values(logits, top_vals[step].size());
      EXPECT_LE(max_abs_diff(top, top_vals[step]), topk_tolerance()) << "top-5 logits at step " << step;
      const int32_t token = greedy.sample(logits, generated);
      generated.push_back(token);
      if (int(step) <= exact_through) {
        ASSERT_EQ(token, tokens[step]) << "greedy token at step " << step;
      }
      if (step + 1 == tokens.size()) break;
      model_->embed(std::span(&token, 1), embedding.data());
      logits = model_->forward(embedding.data(), 1, cache);
    }
    EXPECT_EQ(cache.size(), expected["seq_len"].get<int>() + int(tokens.size()) - 1);
  }

  static Checkpoint* checkpoint_;
  static Decoder* model_;
  static nlohmann::json* golden_;
};

Checkpoint* Qwen2Test::checkpoint_ = nullptr;
Decoder* Qwen2Test::model_ = nullptr;
nlohmann::json* Qwen2Test::golden_ = nullptr;

TEST_F(Qwen2Test, ConfigComesFromTheCheckpoint) {
  const TextConfig& c = model_->config();
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.vocab_size, 151936);
}

TEST_F(Qwen2Test, PrefillMatchesGoldenLogitsAndDecodesGreedily) {
  for (const std::string image : {"image_a_320x200", "image_b_97x131"}) {
    SCOPED_TRACE(image);
    const nlohmann::json& expected = (*golden_)["images"][image];
    const auto file = kGolden / expected["tensors_file"].get<std::string>();
    const std::vector<float> embeds = read_golden(file, "inputs_embeds");
    const int n = expected["seq_len"].get<int>();
    ASSERT_EQ(embeds.size(), size_t(n) * model_->config().hidden_size);

    KVCache cache(model_->config(), 64);
    std::vector<float> logits = model_->forward(embeds.data(), n, cache);
    EXPECT_EQ(cache.size(), n);
    EXPECT_LE(max_abs_diff(logits, read_golden(file, "last_logits")), logits_tolerance());
    expect_greedy_continuation(std::move(logits), cache, expected);
  }
}

TEST_F(Qwen2Test, HiddenStatesMatchGoldenIntermediates) {
  const nlohmann::json& expected = (*golden_)["images"]["image_a_320x200"];
  const auto inputs = kGolden / expected["tensors_file"].get<std::string>();
  const auto intermediates = kGolden / expected["intermediates_file"].get<std::string>();
  const std::vector<float> embeds = read_golden(inputs, "inputs_embeds");
  const int n = expected["seq_len"].get<int>();

  std::map<std::string, std::vector<float>, std::less<>> observed;
  KVCache cache(model_->config(), n);
  model_->forward(embeds.data(), n, cache, [&](std::string_view name, const float* data, int rows, int cols) {
    observed[std::string(name)].assign(data, data + size_t(rows) * cols);
  });

  for (const std::string name : {"llm.hidden.0", "llm.hidden.1", "llm.final_norm"}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(observed.contains(name));
    const std::vector<float> reference = read_golden(intermediates, name);
    // Same relative bound the fixture sets for the other float32 activations.
    EXPECT_LE(max_abs_diff(observed[name], reference), 1e-4f * max_abs(reference));
  }
}

TEST_F(Qwen2Test, TextOnlyPromptFromTokenIds) {
  const nlohmann::json& expected = (*golden_)["text_only"];
  const auto ids = expected["ids"].get<std::vector<int32_t>>();
  const int n = int(ids.size());
  std::vector<float> embeds(size_t(n) * model_->config().hidden_size);
  model_->embed(ids, embeds.data());

  KVCache cache(model_->config(), 64);
  std::vector<float> logits = model_->forward(embeds.data(), n, cache);
  const auto file = kGolden / expected["tensors_file"].get<std::string>();
  EXPECT_LE(max_abs_diff(logits, read_golden(file, "last_logits")), logits_tolerance());

  nlohmann::json with_length = expected;
  with_length["seq_len"] = n;
  expect_greedy_continuation(std::move(logits), cache, with_length);
}

TEST_F(Qwen2Test, ChunkedPrefillAndTruncatedCacheGiveTheSameLogits) {
  const nlohmann::json& expected = (*golden_)["images"]["image_a_320x200"];
  const auto file = kGolden / expected["tensors_file"].get<std::string>();
  const std::vector<float> embeds = read_golden(file, "inputs_embeds");
  const std::vector<float> reference = read_golden(file, "last_logits");
  const int hidden = model_->config().hidden_size;
  const int n = expected["seq_len"].get<int>();
  const int first_chunk = 25;

  KVCache cache(model_->config(), n);
  model_->forward(embeds.data(), first_chunk, cache);
  EXPECT_EQ(cache.size(), first_chunk);
  std::vector<float> logits = model_->forward(embeds.data() + size_t(first_chunk) * hidden, n - first_chunk, cache);
  EXPECT_EQ(cache.size(), n);
  EXPECT_LE(max_abs_diff(logits, reference), logits_tolerance());

  // Rolling back to a prefix and feeding the rest again, one position at a time, reuses the cached prefix.
  cache.truncate(first_chunk);
  for (int position = first_chunk; position < n; ++position) {
    logits = model_->forward(embeds.data() + size_t(position) * hidden, 1, cache);
  }
  EXPECT_EQ(cache.size(), n);
  EXPECT_LE(max_abs_diff(logits, reference), logits_tolerance());
}

TEST_F(Qwen2Test, ContextOverflowIsAnErrorAndLeavesTheCacheUsable) {
  const nlohmann::json& expected = (*golden_)["images"]["image_a_320x200"];
  const auto file = kGolden / expected["tensors_file"].get<std::string>();
  const std::vector<float> embeds = read_golden(file, "inputs_embeds");
  const int n = expected["seq_len"].get<int>();

  KVCache too_small(model_->config(), n - 1);
  EXPECT_THROW(model_->forward(embeds.data(), n, too_small), Error);
  EXPECT_EQ(too_small.size(), 0);

  KVCache exact(model_->config(), n);
  const std::vector<float> logits = model_->forward(embeds.data(), n, exact);
  EXPECT_THROW(model_->forward(embeds.data(), 1, exact), Error);
  EXPECT_EQ(exact.size(), n);
  EXPECT_THROW(exact.truncate(n + 1), Error);
  EXPECT_THROW(exact.commit(1), Error);

  EXPECT_THROW(KVCache(model_->config(), 0), Error);
  EXPECT_THROW(KVCache(model_->config(), model_->config().max_position_embeddings + 1), Error);
}

TEST_F(Qwen2Test, EmbeddingRejectsIdsOutsideTheVocabulary) {
  std::vector<float> out(model_->config().hidden_size);
  const int32_t negative = -200;  // the image marker must never reach the embedding
  const int32_t past_end = model_->config().vocab_size;
  EXPECT_THROW(model_->embed(std::span(&negative, 1), out.data()), Error);
  EXPECT_THROW(model_->embed(std::span(&past_end, 1), out.data()), Error);
}

TEST_F(Qwen2Test, EmbeddingRowsAreTheGoldenTextRows) {
  // Text positions of inputs_embeds are the bf16 embedding rows upcast exactly (golden.json says so).
  const nlohmann::json& expected = (*golden_)["images"]["image_a_320x200"];
  const auto prompt = (*golden_)["prompt_ids"].get<std::vector<int32_t>>();
  const std::vector<float> embeds = read_golden(kGolden / expected["tensors_file"].get<std::string>(), "inputs_embeds");
  const int hidden = model_->config().hidden_size;
  std::vector<float> row(hidden);
  model_->embed(std::span(prompt.data(), 1), row.data());
  EXPECT_EQ(max_abs_diff(row, std::span(embeds.data(), hidden)), 0.0f);
}

}  // namespace
}  // namespace fastvlm
