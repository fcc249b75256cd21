// The multiply-accumulate counts behind `fastvlm bench`'s GFLOP/s, against the figures counted with
// forward hooks on the official model (shared/docs/fastvlm-facts.md).
#include <gtest/gtest.h>

#include "llm/text_config.h"
#include "llm/text_decoder.h"
#include "vision/fastvit.h"

using namespace fastvlm;

TEST(FlopCounts, FastViTHDMatchesTheOfficialCount) {
  const VisionConfig fastvithd;  // the defaults are stock FastViTHD
  EXPECT_NEAR(double(vision_macs(fastvithd, 1024)), 243.4e9, 0.05e9);
  EXPECT_NEAR(double(vision_macs(fastvithd, 512)), 59.6e9, 0.05e9);
}

TEST(FlopCounts, Qwen2PrefillMatchesTheOfficialCount) {
  TextConfig qwen2_05b;
  qwen2_05b.hidden_size = 896;
  qwen2_05b.intermediate_size = 4864;
  qwen2_05b.num_hidden_layers = 24;
  qwen2_05b.num_attention_heads = 14;
  qwen2_05b.num_key_value_heads = 2;
  qwen2_05b.head_dim = 64;
  qwen2_05b.vocab_size = 151936;
  EXPECT_NEAR(double(prefill_macs(qwen2_05b, 280)), 102.0e9, 0.05e9);
}
