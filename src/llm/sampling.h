#pragma once
// Choosing the next token from logits: greedy, or llama.cpp-style stochastic sampling with a seed.
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace fastvlm {

// Defaults follow llama.cpp's (top_k 40, top_p 0.95, min_p 0.05, repeat_last_n 64) except two: the
// temperature defaults to 0 (greedy, the reproducible choice), and the seed defaults to the fixed value 0
// rather than a random one; a caller wanting a fresh sequence per run passes its own seed.
struct SamplingParams {
  float temperature = 0.0f;     // <= 0: greedy (argmax, ties to the lowest id)
  int top_k = 40;               // <= 0 or >= vocab: disabled
  float top_p = 0.95f;          // >= 1: disabled
  float min_p = 0.05f;          // <= 0: disabled
  float repeat_penalty = 1.0f;  // 1: disabled
  int repeat_last_n = 64;       // tokens of `recent_tokens` penalised; 0: none, -1: all of them
  uint64_t seed = 0;
};

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

}  // namespace fastvlm
