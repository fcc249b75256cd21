#pragma once
// Choosing the next token from logits: greedy, or llama.cpp-style stochastic sampling with a seed.
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "fastvlm/sampling.hpp"

namespace fastvlm {

class Sampler {
 public:
  // Throws fastvlm::Error for a repeat_penalty <= 0 or a repeat_last_n < -1.
  explicit Sampler(const SamplingParams& params);

  // Picks a token id from `logits` [vocab]. `recent_tokens` are the context's token ids, oldest first; the
  // last repeat_last_n of them get the repetition penalty (CTRL style: a positive logit is divided by the
  // penalty, a negative one multiplied), in greedy mode too. Then, unless greedy: top-k, softmax with the
  // temperature, top-p, min-p, and a draw from the survivors with the seeded generator, so that the same
  // seed and inputs give the same sequence. Throws on empty logits, or on a recent token outside the
  // vocabulary when the penalty applies.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> recent_tokens);

  const SamplingParams& params() const { return params_; }

  // Applies the presence and frequency penalties over `generated` (this answer's tokens) and logit_bias,
  // in place. Throws when a biased id is outside `logits`.
  void apply_penalties(std::span<float> logits, std::span<const int32_t> generated) const;

 private:
  struct Candidate {
    int32_t id;
    float logit;
  };
  void apply_repetition_penalty(std::span<const int32_t> recent_tokens);
  void select_top_k(std::span<const float> scores);

  SamplingParams params_;
  std::mt19937_64 generator_;
  std::vector<float> penalised_;         // logits after the repetition penalty
  std::vector<Candidate> candidates_;    // reused between calls
  std::vector<float> probabilities_;
};

// The log-softmax of `logits` at `token`, and the `top_n` highest entries (ties to the lower id).
TokenLogprob token_logprob(std::span<const float> logits, int32_t token, int top_n);

}  // namespace fastvlm
