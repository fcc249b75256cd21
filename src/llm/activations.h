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

}  // namespace fastvlm
