#pragma once
// Sampling settings, shared by the public API (GenerateOptions) and the sampler (src/llm/sampling.h).
#include <cstdint>
#include <utility>
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
  // OpenAI's: subtracted from the logit of every token already in the answer (presence, once) and per
  // occurrence (frequency); the prompt is not counted. 0: disabled.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<std::pair<int32_t, float>> logit_bias;  // added to the logits of these ids (-100 bans, 100 forces)
};

// A generated token's log-probability under the model: the log-softmax of its raw logits, before
// penalties, biases, temperature or a JSON schema's mask (what OpenAI reports), with the `top` most likely
// tokens of that distribution, most likely first.
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

}  // namespace fastvlm
