#pragma once
// The element-wise work of a decoder layer that sits between its GEMMs: SiLU-gating and the attention
// softmax. In prefill these are tens of millions of exponentials per prompt, serial and scalar in
// core/ops.h, so they get an AVX-512 path (a polynomial exp accurate to ~2 ulp) and OpenMP here; below
// AVX-512 they use std::exp.
#include <cstdint>

#include "core/cpu.h"

namespace fastvlm {

// gate[i] = silu(gate[i]) * up[i] for n elements (threaded when n is large).
void silu_multiply(float* gate, const float* up, int64_t n, Isa isa = active_isa());

// Numerically stable softmax of one row of n floats, in place (single-threaded).
void softmax_row(float* x, int64_t n, Isa isa = active_isa());

// One key tile of a streaming softmax row (flash attention). `scores` holds the row's raw q·k over a tile
// of `width` keys of which the first `valid` are visible (valid <= 0: none, the rest are causally masked).
// `running_max` and `running_sum` carry the row's largest raw score so far and Σ exp(scale·(s - max)).
// Writes probabilities[i] = exp(scale·(scores[i] - new max)) for the visible keys and 0 for the masked ones,
// updates both running values, and returns the factor by which the row's output accumulated so far must
// be multiplied (exp(scale·(old max - new max)); 1 when nothing is visible). Single-threaded.
float online_softmax_tile(const float* scores, int64_t valid, int64_t width, float scale, float& running_max,
                          float& running_sum, float* probabilities, Isa isa = active_isa());
// The same with the probabilities rounded to bfloat16 (nearest even); needs isa >= Isa::Avx512 for the
// vector path, otherwise runs the scalar one.
float online_softmax_tile(const float* scores, int64_t valid, int64_t width, float scale, float& running_max,
                          float& running_sum, uint16_t* probabilities, Isa isa = active_isa());

}  // namespace fastvlm
