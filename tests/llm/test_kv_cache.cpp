// The KV cache's memory: room for the whole context, but resident only as far as positions are written
// (a short conversation in a 4096-position context must not cost the whole context's RAM), and zeros
// wherever nothing was written.
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "llm/kv_cache.h"
#include "resident_pages.h"

namespace fastvlm {
namespace {

TextConfig cache_config() {
  TextConfig config;
  config.num_hidden_layers = 3;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 64;
  config.max_position_embeddings = 4096;
  return config;
}

TEST(KVCache, OnlyTheWrittenPositionsAreResident) {
  const TextConfig config = cache_config();
  KVCache cache(config, 4096);
  const int written = 32;  // 8 KiB of each [4096, 64] float block of 1 MiB
  const float* begin = cache.keys(0, 0);
  const float* end = cache.values(config.num_hidden_layers - 1, config.num_key_value_heads - 1) +
                     size_t(cache.capacity()) * config.head_dim;
  EXPECT_EQ(resident_pages(begin, end), 0u) << "a new cache is already resident";

  for (int layer = 0; layer < config.num_hidden_layers; ++layer)
    for (int head = 0; head < config.num_key_value_heads; ++head) {
      std::memset(cache.keys(layer, head), 0x3f, sizeof(float) * written * config.head_dim);
      std::memset(cache.values(layer, head), 0x3f, sizeof(float) * written * config.head_dim);
    }
  cache.commit(written);

  const size_t blocks = size_t(config.num_hidden_layers) * 2 * config.num_key_value_heads;
  const size_t block_bytes = sizeof(float) * written * config.head_dim;
  const size_t pages_per_block = (block_bytes + 4095) / 4096;
  // Each written range may straddle one more page than it fills; the other ~255 pages of each block stay out.
  EXPECT_LE(resident_pages(begin, end), blocks * (pages_per_block + 1));
  EXPECT_GE(resident_pages(begin, end), blocks * pages_per_block);
}

TEST(KVCache, ReadsZerosPastTheWrittenPositions) {
  const TextConfig config = cache_config();
  KVCache cache(config, 1000);
  const float* keys = cache.keys(2, 1);
  const float* values = cache.values(2, 1);
  for (int i = 0; i < 1000 * config.head_dim; i += 97) {
    ASSERT_EQ(keys[i], 0.0f) << i;
    ASSERT_EQ(values[i], 0.0f) << i;
  }
}

TEST(KVCache, RefusesAContextTheModelDoesNotHave) {
  const TextConfig config = cache_config();
  EXPECT_THROW(KVCache(config, 4097), Error);
  EXPECT_THROW(KVCache(config, 0), Error);
}

}  // namespace
}  // namespace fastvlm
