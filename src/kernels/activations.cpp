#include "kernels/activations.h"

#include <immintrin.h>

// GCC 12's AVX-512 headers build unmasked results from _mm512_undefined_ps(), which -O3 reports as
// "may be used uninitialized" once inlined; the lanes are all written.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>

#include "core/dtype.h"
#include "core/ops.h"
#include "kernels/dispatch.h"
#include "kernels/simd_exp.h"
#include "kernels/simd_gelu.h"
#include "kernels/simd_mask.h"
#include "kernels/target.h"

namespace fastvlm {
namespace {

// ----- Scalar

void gelu_scalar(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = gelu(x[i]);
}

void f32_to_bf16_scalar(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void silu_multiply_scalar(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = silu(gate[i]) * up[i];
}

// ----- AVX2

FASTVLM_TARGET_AVX2 void gelu_avx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, simd::gelu_avx2(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) x[i] = gelu(x[i]);
}

FASTVLM_TARGET_AVX2 void silu_multiply_avx2(float* gate, const float* up, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 sigmoid_denominator = _mm256_add_ps(one, simd::exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g)));
    _mm256_storeu_ps(gate + i, _mm256_mul_ps(_mm256_div_ps(g, sigmoid_denominator), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) gate[i] = silu(gate[i]) * up[i];
}

// ----- AVX-512

FASTVLM_TARGET_AVX512 void gelu_avx512(float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = simd::first_lanes(n - i);
    _mm512_mask_storeu_ps(x + i, mask, simd::gelu_avx512(_mm512_maskz_loadu_ps(mask, x + i)));
  }
}

FASTVLM_TARGET_AVX512 void f32_to_bf16_avx512(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = simd::first_lanes(n - i);
    _mm256_mask_storeu_epi16(dst + i, mask, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src + i)));
  }
}

FASTVLM_TARGET_AVX512 void silu_multiply_avx512(float* gate, const float* up, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 sigmoid_denominator = _mm512_add_ps(one, simd::exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), g)));
    _mm512_storeu_ps(gate + i, _mm512_mul_ps(_mm512_div_ps(g, sigmoid_denominator), _mm512_loadu_ps(up + i)));
  }
  for (; i < n; ++i) gate[i] = silu(gate[i]) * up[i];
}

struct ActivationOps {
  void (*gelu)(float*, int64_t);
  void (*f32_to_bf16)(const float*, uint16_t*, int64_t);
  void (*silu_multiply)(float*, const float*, int64_t);
};

const ActivationOps& ops() {
  static const ActivationOps chosen = kernels::choose<ActivationOps>({
      .scalar = {gelu_scalar, f32_to_bf16_scalar, silu_multiply_scalar},
      .avx2 = {gelu_avx2, f32_to_bf16_scalar, silu_multiply_avx2},
      .avx512 = {gelu_avx512, f32_to_bf16_avx512, silu_multiply_avx512},
  });
  return chosen;
}

}  // namespace

void gelu_simd(float* x, int64_t n) { ops().gelu(x, n); }

void f32_to_bf16_simd(const float* src, uint16_t* dst, int64_t n) { ops().f32_to_bf16(src, dst, n); }

void silu_multiply(float* gate, const float* up, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const auto variant = ops().silu_multiply;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t begin = chunk * kChunk;
    variant(gate + begin, up + begin, std::min(kChunk, n - begin));
  }
}

}  // namespace fastvlm
