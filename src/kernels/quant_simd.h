#pragma once
// The activation side of the Q8_0 integer arithmetic (core/quant.h), shared by the decode GEMV and the
// prefill GEMM so that both quantise activations identically: per group of 32, scale = max|x| / 127 and
// code = round_to_nearest_even(x · 127 / max|x|). Only for kernel variants compiled for the same level
// (kernels/target.h).
#include <immintrin.h>

#include "kernels/target.h"

#include <cstdint>

namespace fastvlm::simd {

// Quantises the 32 floats at `x` into `codes` and returns the group's scale; `sum` (when not null)
// receives Σ codes, for the corrections of unsigned-code products.
FASTVLM_TARGET_AVX512 inline float quantize_group_avx512(const float* x, int8_t* codes, int32_t* sum = nullptr) {
  const __m512 low = _mm512_loadu_ps(x), high = _mm512_loadu_ps(x + 16);
  const float largest = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(low), _mm512_abs_ps(high)));
  const __m512 inverse = _mm512_set1_ps(largest == 0 ? 0.0f : 127.0f / largest);
  // The default MXCSR rounding is to nearest even, as std::nearbyint in scalar code.
  const __m512i low_codes = _mm512_cvtps_epi32(_mm512_mul_ps(low, inverse));
  const __m512i high_codes = _mm512_cvtps_epi32(_mm512_mul_ps(high, inverse));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(low_codes));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + 16), _mm512_cvtepi32_epi8(high_codes));
  if (sum) *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(low_codes, high_codes));
  return largest / 127.0f;
}

}  // namespace fastvlm::simd
