#pragma once
// Element-wise float32 kernels: exact-erf GELU, SiLU gating and bfloat16 rounding, with AVX-512, AVX2 and
// scalar variants (the scalar ones are gelu()/silu() of core/ops.h, which stay the reference). The
// vector versions evaluate exp with a degree-7 polynomial (relative error < 2e-8 before rounding) and erf
// with the Abramowitz-Stegun 7.1.28 rational approximation (absolute error below 3e-7), so results differ
// from std::erf / std::exp by a few float ulps.
#include <cstdint>

namespace fastvlm {

// x[i] = gelu(x[i]) for i < n, on the calling thread (callers parallelise over their own rows).
void gelu_simd(float* x, int64_t n);

// dst[i] = src[i] rounded to bfloat16 (nearest even), on the calling thread.
void f32_to_bf16_simd(const float* src, uint16_t* dst, int64_t n);

// gate[i] = silu(gate[i]) * up[i] for n elements (threaded when n is large).
void silu_multiply(float* gate, const float* up, int64_t n);

}  // namespace fastvlm
