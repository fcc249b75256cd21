#pragma once
// Softmax kernels: whole rows (vision attention, LLM decode attention) and the tiles of a streaming
// softmax row (LLM prefill attention), with AVX-512, AVX2 and scalar variants. The vector versions
// evaluate exp with a polynomial accurate to ~2 ulp; the scalar ones use std::exp.
#include <cstdint>

namespace fastvlm {

// Numerically stable softmax of one row of n floats, in place, on the calling thread.
void softmax_row(float* x, int64_t n);

// Softmax of each of `rows` rows of length `cols`, in place (threaded over rows when there is enough work).
void softmax_rows(float* x, int64_t rows, int64_t cols);

// The numerators of the softmax of each of `rows` rows of length `cols`, for a product with them that
// divides its result rows by the sums afterwards (one pass fewer over the rows than normalising here):
// numerators[r, c] = exp(x[r, c] - max of row r) rounded to bfloat16 ([rows, cols]), sums[r] = the sum of
// row r's exps before rounding. The exp is accurate to ~5e-5 relative, far below bfloat16's step. On the
// calling thread; needs bf16_compute_available(), throws fastvlm::Error otherwise.
void softmax_numerators_bf16(const float* x, int64_t rows, int64_t cols, uint16_t* numerators, float* sums);

// One key tile of a streaming softmax row (flash attention). `scores` holds the row's raw q·k over a tile
// of `width` keys of which the first `valid` are visible (valid <= 0: none, the rest are causally masked).
// `running_max` and `running_sum` carry the row's largest raw score so far and Σ exp(scale·(s - max)).
// Writes probabilities[i] = exp(scale·(scores[i] - new max)) for the visible keys and 0 for the masked ones,
// updates both running values, and returns the factor by which the row's output accumulated so far must
// be multiplied (exp(scale·(old max - new max)); 1 when nothing is visible). Single-threaded.
float online_softmax_tile(const float* scores, int64_t valid, int64_t width, float scale, float& running_max,
                          float& running_sum, float* probabilities);
// The same with the probabilities rounded to bfloat16 (nearest even).
float online_softmax_tile(const float* scores, int64_t valid, int64_t width, float scale, float& running_max,
                          float& running_sum, uint16_t* probabilities);

}  // namespace fastvlm
