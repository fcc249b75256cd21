// Sampler behaviour on hand-made logits whose expected outcome is known by construction.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "core/error.h"
#include "llm/sampling.h"

namespace fastvlm {
namespace {

constexpr float kFarBelow = -30.0f;  // a logit whose probability is negligible next to O(1) ones

// No filtering: every token can be drawn with its softmax probability.
SamplingParams unfiltered(uint64_t seed = 0) {
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_k = 0;
  params.top_p = 1.0f;
  params.min_p = 0.0f;
  params.seed = seed;
  return params;
}

// Logits whose softmax at temperature 1 is `probabilities` on ids 0.. and ~0 on `padding` more ids.
std::vector<float> logits_for(const std::vector<double>& probabilities, int padding = 100) {
  std::vector<float> logits(probabilities.size() + padding, kFarBelow);
  for (size_t i = 0; i < probabilities.size(); ++i) logits[i] = float(std::log(probabilities[i]));
  return logits;
}

std::vector<int32_t> draw(Sampler& sampler, const std::vector<float>& logits, int count) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < count; ++i) tokens.push_back(sampler.sample(logits, {}));
  return tokens;
}

std::map<int32_t, double> frequencies(const std::vector<int32_t>& tokens) {
  std::map<int32_t, double> result;
  for (int32_t t : tokens) result[t] += 1.0 / tokens.size();
  return result;
}

TEST(Sampler, GreedyPicksTheArgmaxWithTiesToTheLowestId) {
  Sampler greedy(SamplingParams{});
  const std::vector<float> logits{0.5f, 3.0f, -1.0f, 3.0f, 2.9f};
  EXPECT_EQ(greedy.sample(logits, {}), 1);
  const std::vector<float> single{-7.0f};
  EXPECT_EQ(greedy.sample(single, {}), 0);
}

TEST(Sampler, SameSeedGivesTheSameSequenceAndOtherSeedsDiffer) {
  const std::vector<float> flat(1000, 0.0f);
  Sampler first(unfiltered(42)), second(unfiltered(42)), other(unfiltered(43));
  const auto a = draw(first, flat, 64);
  const auto b = draw(second, flat, 64);
  const auto c = draw(other, flat, 64);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // A flat distribution over 1000 tokens: 64 draws are very unlikely to repeat the same id throughout.
  EXPECT_GT(frequencies(a).size(), 32u);
}

TEST(Sampler, TopKOfOneIsGreedy) {
  SamplingParams params = unfiltered(7);
  params.top_k = 1;
  params.temperature = 5.0f;  // flattening would let other tokens through if top-k did not cut them
  Sampler sampler(params);
  Sampler greedy(SamplingParams{});
  for (int round = 0; round < 20; ++round) {
    std::vector<float> logits(500);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(std::sin(0.37 * i * (round + 1)));
    EXPECT_EQ(sampler.sample(logits, {}), greedy.sample(logits, {}));
  }
}

TEST(Sampler, TopKKeepsExactlyTheKHighest) {
  SamplingParams params = unfiltered(1);
  params.top_k = 3;
  params.temperature = 100.0f;  // near-uniform over whatever survives
  Sampler sampler(params);
  std::vector<float> logits(200, 0.0f);
  logits[17] = 3.0f;
  logits[150] = 2.5f;
  logits[3] = 2.0f;
  logits[4] = 1.9f;  // fourth: must never be drawn
  auto freq = frequencies(draw(sampler, logits, 3000));
  EXPECT_EQ(freq.size(), 3u);
  for (int32_t id : {17, 150, 3}) EXPECT_NEAR(freq.count(id) ? freq.at(id) : 0.0, 1.0 / 3, 0.05) << id;
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingTheMass) {
  SamplingParams params = unfiltered(3);
  params.top_p = 0.8f;  // cumulative 0.4, 0.7, 0.9: the third token completes the mass
  Sampler sampler(params);
  auto freq = frequencies(draw(sampler, logits_for({0.4, 0.3, 0.2, 0.1}), 4000));
  EXPECT_EQ(freq.size(), 3u);
  EXPECT_EQ(freq.count(3), 0u);
  // The survivors keep their relative weights: 0.4, 0.3, 0.2 out of 0.9.
  EXPECT_NEAR(freq[0], 0.4 / 0.9, 0.04);
  EXPECT_NEAR(freq[1], 0.3 / 0.9, 0.04);
  EXPECT_NEAR(freq[2], 0.2 / 0.9, 0.04);
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheBest) {
  SamplingParams params = unfiltered(5);
  params.min_p = 0.2f;  // threshold 0.2 x 0.5 = 0.1: 0.15 survives, 0.05 does not
  Sampler sampler(params);
  auto freq = frequencies(draw(sampler, logits_for({0.5, 0.3, 0.15, 0.05}), 4000));
  EXPECT_EQ(freq.size(), 3u);
  EXPECT_EQ(freq.count(3), 0u);
  EXPECT_NEAR(freq[2], 0.15 / 0.95, 0.04);
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplingParams params;
  params.repeat_penalty = 1.5f;
  params.repeat_last_n = 2;
  Sampler greedy(params);

  const std::vector<float> positive{2.0f, 1.8f, -1.0f};
  const std::vector<int32_t> recent_zero{0};
  EXPECT_EQ(greedy.sample(positive, {}), 0);
  EXPECT_EQ(greedy.sample(positive, recent_zero), 1);  // 2.0 / 1.5 < 1.8
  // Token 0 is three tokens back, outside the window of 2: not penalised.
  const std::vector<int32_t> old_zero{0, 2, 2};
  EXPECT_EQ(greedy.sample(positive, old_zero), 0);
  // Repeats of one id are penalised once: 2.0 / 1.5 = 1.33 still beats 1.3, 2.0 / 1.5² would not.
  const std::vector<float> close{2.0f, 1.3f};
  const std::vector<int32_t> twice{0, 0};
  EXPECT_EQ(greedy.sample(close, twice), 0);

  const std::vector<float> negative{-1.0f, -1.2f};
  EXPECT_EQ(greedy.sample(negative, recent_zero), 1);  // -1.0 x 1.5 < -1.2

  params.repeat_penalty = 1.0f;
  Sampler unpenalised(params);
  EXPECT_EQ(unpenalised.sample(positive, recent_zero), 0);
}

TEST(Sampler, InvalidInputsAreErrors) {
  Sampler greedy(SamplingParams{});
  EXPECT_THROW(greedy.sample(std::vector<float>{}, {}), Error);

  SamplingParams penalised;
  penalised.repeat_penalty = 1.3f;
  Sampler sampler(penalised);
  const std::vector<float> logits{1.0f, 2.0f};
  const std::vector<int32_t> out_of_vocab{5};
  EXPECT_THROW(sampler.sample(logits, out_of_vocab), Error);

  SamplingParams bad = penalised;
  bad.repeat_penalty = 0.0f;
  EXPECT_THROW(Sampler{bad}, Error);
  bad = penalised;
  bad.repeat_last_n = -2;
  EXPECT_THROW(Sampler{bad}, Error);
}

}  // namespace
}  // namespace fastvlm
