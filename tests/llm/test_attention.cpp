// The tiled prefill attention against a plain double-precision causal softmax attention on random data
// with a long context filled in chunks (grouped-query heads, tiles straddling the diagonal).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/error.h"
#include "llm/attention.h"
#include "llm/kv_cache.h"

namespace fastvlm {
namespace {

constexpr int kHeads = 6;
constexpr int kKvHeads = 2;
constexpr int kHeadDim = 64;
constexpr int kContext = 1500;

TextConfig attention_config() {
  TextConfig config;
  config.num_hidden_layers = 2;
  config.num_attention_heads = kHeads;
  config.num_key_value_heads = kKvHeads;
  config.head_dim = kHeadDim;
  config.max_position_embeddings = 4096;
  return config;
}

std::vector<float> random_values(size_t count, float spread, uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> values(count);
  for (float& v : values) v = normal(generator);
  return values;
}

// out[n, heads*head_dim] for queries at positions first.., each seeing positions 0..its own: the textbook
// formula, one score row at a time, in double.
std::vector<float> reference_attention(const std::vector<float>& queries, int n, int first, const KVCache& cache,
                                       int layer) {
  std::vector<float> out(size_t(n) * kHeads * kHeadDim);
  const double scale = 1.0 / std::sqrt(double(kHeadDim));
  for (int r = 0; r < n; ++r) {
    const int visible = first + r + 1;
    for (int h = 0; h < kHeads; ++h) {
      const int kv = h / (kHeads / kKvHeads);
      const float* q = queries.data() + (size_t(r) * kHeads + h) * kHeadDim;
      std::vector<double> weights(visible);
      for (int p = 0; p < visible; ++p) {
        double dot = 0;
        for (int d = 0; d < kHeadDim; ++d) dot += double(q[d]) * cache.keys(layer, kv)[size_t(p) * kHeadDim + d];
        weights[p] = dot * scale;
      }
      const double largest = *std::max_element(weights.begin(), weights.end());
      double sum = 0;
      for (double& w : weights) sum += (w = std::exp(w - largest));
      for (int d = 0; d < kHeadDim; ++d) {
        double value = 0;
        for (int p = 0; p < visible; ++p) value += weights[p] * cache.values(layer, kv)[size_t(p) * kHeadDim + d];
        out[(size_t(r) * kHeads + h) * kHeadDim + d] = float(value / sum);
      }
    }
  }
  return out;
}

struct Errors {
  float max_abs = 0;
  float largest_reference = 0;
};

// Fills layer 1 of a cache chunk by chunk (as a chunked prefill does) and compares every chunk's
// attention with the reference.
Errors run_chunked(Precision precision) {
  KVCache cache(attention_config(), kContext);
  const int layer = 1;
  // Keys with a few large components make the softmax peaky, so a wrong running maximum or a missing
  // rescale of earlier tiles shows.
  const auto keys = random_values(size_t(kKvHeads) * kContext * kHeadDim, 1.5f, 7);
  const auto values = random_values(size_t(kKvHeads) * kContext * kHeadDim, 1.0f, 8);
  for (int kv = 0; kv < kKvHeads; ++kv) {
    std::copy_n(keys.data() + size_t(kv) * kContext * kHeadDim, size_t(kContext) * kHeadDim, cache.keys(layer, kv));
    std::copy_n(values.data() + size_t(kv) * kContext * kHeadDim, size_t(kContext) * kHeadDim,
                cache.values(layer, kv));
  }
  Errors errors;
  AttentionScratch scratch;
  int first = 0;
  uint32_t seed = 100;
  // Uneven chunks: one query, a block that ends mid tile, and a long one crossing many key tiles.
  for (const int n : {1, 300, 37, kContext - 338}) {
    const auto queries = random_values(size_t(n) * kHeads * kHeadDim, 1.0f, seed++);
    std::vector<float> attended(queries.size(), std::nanf(""));
    causal_attention(queries.data(), n, first, kHeads, cache, layer, precision, scratch, attended.data());
    const auto expected = reference_attention(queries, n, first, cache, layer);
    for (size_t i = 0; i < expected.size(); ++i) {
      const float difference = std::fabs(attended[i] - expected[i]);
      errors.max_abs = std::isnan(difference) ? INFINITY : std::max(errors.max_abs, difference);
      errors.largest_reference = std::max(errors.largest_reference, std::fabs(expected[i]));
    }
    first += n;
  }
  EXPECT_EQ(first, kContext);
  return errors;
}

TEST(CausalAttention, Float32MatchesTheReferenceOverALongChunkedContext) {
  const Errors errors = run_chunked(Precision::F32);
  EXPECT_GT(errors.largest_reference, 0.5f);
  EXPECT_LT(errors.max_abs, 2e-5f) << "largest reference value " << errors.largest_reference;
}

TEST(CausalAttention, Bfloat16StaysWithinItsRoundingOfTheReference) {
  if (active_isa() < Isa::Avx512) GTEST_SKIP() << "bf16 attention needs AVX512-BF16";
  const Errors errors = run_chunked(Precision::Bf16);
  // q, k, v and the probabilities carry 8 significant bits each: a few 1e-3 of the O(1) outputs.
  EXPECT_LT(errors.max_abs, 2e-2f) << "largest reference value " << errors.largest_reference;
}

TEST(CausalAttention, RejectsQueriesPastTheCache) {
  KVCache cache(attention_config(), 64);
  std::vector<float> queries(size_t(10) * kHeads * kHeadDim), attended(queries.size());
  AttentionScratch scratch;
  EXPECT_THROW(causal_attention(queries.data(), 10, 60, kHeads, cache, 0, Precision::F32, scratch,
                                attended.data()),
               Error);
  EXPECT_THROW(causal_attention(queries.data(), 10, 0, 5, cache, 0, Precision::F32, scratch,
                                attended.data()),
               Error);
}

// The streaming softmax over uneven tiles (every ISA path, f32 and bf16 outputs) reproduces one softmax
// over the whole row once the tiles are rescaled by the returned corrections.
}  // namespace
}  // namespace fastvlm
