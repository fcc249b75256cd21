#pragma once
// Vectorised exact-erf GELU and softmax for float32 buffers, chosen at run time from active_isa():
// AVX-512, AVX2 or the scalar gelu()/softmax_rows() of core/ops.h (which stay the reference). The SIMD
// versions evaluate exp with a degree-6 polynomial (relative error < 2e-8 before rounding) and erf with
// the Abramowitz-Stegun 7.1.26 rational approximation (absolute error below 1.5e-7, the one oneDNN's
// gelu_erf uses), so results differ from std::erf / std::exp by a few float ulps.
#include <cstdint>

namespace fastvlm {

// x[i] = gelu(x[i]) for i < n, on the calling thread (callers parallelise over their own rows).
void gelu_simd(float* x, int64_t n);

// dst[i] = src[i] rounded to bfloat16 (nearest even), on the calling thread.
void f32_to_bf16_simd(const float* src, uint16_t* dst, int64_t n);

// Softmax of each of `rows` rows of length `cols` (threaded over rows). The result goes back to `x`, or
// when `bf16_out` is not null to `bf16_out` ([rows, cols], rounded to bfloat16; needs Isa::Avx512) with
// `x` left as scratch.
void softmax_rows_simd(float* x, int64_t rows, int64_t cols, uint16_t* bf16_out = nullptr);

}  // namespace fastvlm
