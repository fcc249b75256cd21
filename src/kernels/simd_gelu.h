#pragma once
// Vectorised GELU (the erf form, as PyTorch's nn.GELU()), one definition per ISA, for the kernels that
// apply it in their epilogues. Only for kernel variants compiled for the same level (kernels/target.h).
#include <immintrin.h>

#include "kernels/target.h"

namespace fastvlm::simd {

// Abramowitz & Stegun 7.1.28: erf(a) = 1 - r^16 with r = 1 / (1 + a1·a + a2·a² + ... + a6·a⁶), for a >= 0,
// |error| <= 3e-7. No exponential: GELU runs over every hidden activation of the vision tower, and this
// form costs about 0.6x the exp-based one (A&S 7.1.26) at the same accuracy in float32.
inline constexpr float kErfA1 = 0.0705230784f, kErfA2 = 0.0422820123f, kErfA3 = 0.0092705272f, kErfA4 = 0.0001520143f,
                kErfA5 = 0.0002765672f, kErfA6 = 0.0000430638f;
inline constexpr float kInvSqrt2 = 0.70710678118654752440f;

FASTVLM_TARGET_AVX512 inline __m512 gelu_avx512(__m512 input) {
  // Below -10 GELU is 0 within float precision; clamping there keeps 0.5·x·r^16 near 0 for huge
  // negative inputs, and clamping a at 8 (erf = 1 in float) keeps p finite for the Newton step below.
  const __m512 x = _mm512_max_ps(_mm512_set1_ps(-10.0f), input);  // (max returns a NaN second operand: NaN stays)
  const __m512 a = _mm512_min_ps(_mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(kInvSqrt2))), _mm512_set1_ps(8.0f));
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kErfA6), a, _mm512_set1_ps(kErfA5));
  p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(kErfA4));
  p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(kErfA3));
  p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(kErfA2));
  p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(kErfA1));
  p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(1.0f));
  // r = 1 / p: the 14-bit estimate and one Newton step.
  const __m512 estimate = _mm512_rcp14_ps(p);
  __m512 r = _mm512_mul_ps(estimate, _mm512_fnmadd_ps(p, estimate, _mm512_set1_ps(2.0f)));
  for (int square = 0; square < 4; ++square) r = _mm512_mul_ps(r, r);  // r^16
  // erf is odd: 1 + erf(x / sqrt 2) is 2 - r^16 for x >= 0 and r^16 below.
  const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 one_plus_erf = _mm512_mask_mov_ps(_mm512_sub_ps(_mm512_set1_ps(2.0f), r), negative, r);
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), one_plus_erf);
}

// GELU(x) = max(x, 0) - |x|·q(|x|) with q(a) = erfc(a / sqrt 2) / 2 (on both sides: x·Φ(x) = x - x·Φ(-x)),
// q by a degree-6 polynomial on [0, 4] (Chebyshev interpolation) and |x| clamped at 4: GELU within 5e-4
// absolute everywhere (q(4) is 3e-5), with no reciprocal, and GELU(0) = 0 exactly. Only for results that
// are quantised to 8 bits next, whose step (max|x| / 127 of the row) is ten times or more that error.
inline constexpr float kCoarseGeluClamp = 4.0f;
inline constexpr float kCoarseGeluQ[] = {0.499540553f,  -0.387565571f, -0.0479074108f, 0.144223429f,
                                         -0.059420496f, 0.0103162002f, -0.000675117745f};

FASTVLM_TARGET_AVX512 inline __m512 gelu_coarse_avx512(__m512 x) {
  // min(|x|, clamp) in one range op (imm 0b1010: the smaller magnitude, sign cleared).
  const __m512 magnitude = _mm512_range_ps(x, _mm512_set1_ps(kCoarseGeluClamp), 0x0A);
  __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(kCoarseGeluQ[6]), magnitude, _mm512_set1_ps(kCoarseGeluQ[5]));
  for (int k = 4; k >= 0; --k) q = _mm512_fmadd_ps(q, magnitude, _mm512_set1_ps(kCoarseGeluQ[k]));
  // max(0, x) (not max(x, 0)) returns a NaN x, so NaN stays NaN.
  return _mm512_fnmadd_ps(magnitude, q, _mm512_max_ps(_mm512_setzero_ps(), x));
}

// gelu_coarse_avx512's polynomial with AVX2 (the clamp as min of the magnitude).
FASTVLM_TARGET_AVX2 inline __m256 gelu_coarse_avx2(__m256 x) {
  const __m256 magnitude =
      _mm256_min_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), _mm256_set1_ps(kCoarseGeluClamp));
  __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(kCoarseGeluQ[6]), magnitude, _mm256_set1_ps(kCoarseGeluQ[5]));
  for (int k = 4; k >= 0; --k) q = _mm256_fmadd_ps(q, magnitude, _mm256_set1_ps(kCoarseGeluQ[k]));
  return _mm256_fnmadd_ps(magnitude, q, _mm256_max_ps(_mm256_setzero_ps(), x));
}

FASTVLM_TARGET_AVX2 inline __m256 gelu_avx2(__m256 x) {
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_mul_ps(x, _mm256_set1_ps(kInvSqrt2)));
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(kErfA6), a, _mm256_set1_ps(kErfA5));
  p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(kErfA4));
  p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(kErfA3));
  p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(kErfA2));
  p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(kErfA1));
  p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(1.0f));
  __m256 r = _mm256_div_ps(_mm256_set1_ps(1.0f), p);
  for (int square = 0; square < 4; ++square) r = _mm256_mul_ps(r, r);  // r^16
  const __m256 negative = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
  const __m256 one_plus_erf = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), r), r, negative);
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), one_plus_erf);
}

}  // namespace fastvlm::simd
