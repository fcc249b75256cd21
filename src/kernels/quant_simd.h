#pragma once
// The activation side of the Q8_0 integer arithmetic (core/quant.h), shared by the decode GEMV and the
// prefill GEMM so that both quantise activations identically: per group of 32, scale = max|x| / 127 and
// code = round_to_nearest_even(x · 127 / max|x|); its AVX2 pieces (the lanes' max, the 32-code store) also
// serve the vision tower's per-row quantisation (kernels/int8_epilogue.cpp), and the lanes' max the AVX2
// softmax's row maximum (kernels/softmax.cpp). Only for kernel variants compiled
// for the same level (kernels/target.h).
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

// The largest of the 8 lanes.
FASTVLM_TARGET_AVX2 inline float reduce_max_avx2(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

// Stores 32 int32 codes (words[i] holding codes 8i .. 8i+7, each within int8) as bytes in that order, with
// saturating packs. The packs work within 128-bit lanes: afterwards dword j holds codes 4k .. 4k+3 for
// k = (0,2,4,6,1,3,5,7)[j], and one dword permutation restores the order.
FASTVLM_TARGET_AVX2 inline void store_codes_avx2(const __m256i (&words)[4], int8_t* codes) {
  const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(words[0], words[1]), _mm256_packs_epi32(words[2], words[3]));
  const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes), ordered);
}

// The same with AVX2: the codes, written in natural order, the scale and the sum equal those of
// quantize_group_avx512 and of the scalar rounding (std::nearbyint of the same float product).
FASTVLM_TARGET_AVX2 inline float quantize_group_avx2(const float* x, int8_t* codes, int32_t* sum = nullptr) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256 values[4], largest8 = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    values[i] = _mm256_loadu_ps(x + 8 * i);
    largest8 = _mm256_max_ps(largest8, _mm256_andnot_ps(sign_bit, values[i]));
  }
  const float largest = reduce_max_avx2(largest8);
  const __m256 inverse = _mm256_set1_ps(largest == 0 ? 0.0f : 127.0f / largest);
  __m256i words[4];
  for (int i = 0; i < 4; ++i) words[i] = _mm256_cvtps_epi32(_mm256_mul_ps(values[i], inverse));
  store_codes_avx2(words, codes);
  if (sum) {
    const __m256i sum8 = _mm256_add_epi32(_mm256_add_epi32(words[0], words[1]), _mm256_add_epi32(words[2], words[3]));
    __m128i sum4 = _mm_add_epi32(_mm256_castsi256_si128(sum8), _mm256_extracti128_si256(sum8, 1));
    sum4 = _mm_add_epi32(sum4, _mm_unpackhi_epi64(sum4, sum4));
    *sum = _mm_cvtsi128_si32(_mm_add_epi32(sum4, _mm_shuffle_epi32(sum4, 1)));
  }
  return largest / 127.0f;
}

}  // namespace fastvlm::simd
