#pragma once
// Sampling settings, shared by the public API (GenerateOptions) and the sampler (src/llm/sampling.h).
#include <cstdint>

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

}  // namespace fastvlm
