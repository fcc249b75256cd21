#include "core/simd_math.h"

#include <immintrin.h>

// GCC 12's AVX-512 headers build unmasked results from _mm512_undefined_ps(), which -O3 reports as
// "may be used uninitialized" once inlined; the lanes are all written.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/simd_exp.h"
#include "core/simd_gelu.h"
#include "core/simd_mask.h"

namespace fastvlm {
namespace {


#define FASTVLM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))
#define FASTVLM_AVX2 __attribute__((target("avx2,fma")))

// ----- AVX-512

FASTVLM_AVX512 void gelu_avx512(float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = simd::first_lanes(n - i);
    _mm512_mask_storeu_ps(x + i, mask, simd::gelu_avx512(_mm512_maskz_loadu_ps(mask, x + i)));
  }
}

FASTVLM_AVX512 void softmax_row_avx512(float* x, int64_t n, uint16_t* bf16_out) {
  __m512 max = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = simd::first_lanes(n - i);
    max = _mm512_mask_max_ps(max, mask, max, _mm512_maskz_loadu_ps(mask, x + i));
  }
  const __m512 row_max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = simd::first_lanes(n - i);
    const __m512 e = simd::exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), row_max));
    sum = _mm512_mask_add_ps(sum, mask, sum, e);
    _mm512_mask_storeu_ps(x + i, mask, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = simd::first_lanes(n - i);
    const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), inv);
    if (bf16_out)
      _mm256_mask_storeu_epi16(bf16_out + i, mask, (__m256i)_mm512_cvtneps_pbh(p));
    else
      _mm512_mask_storeu_ps(x + i, mask, p);
  }
}

FASTVLM_AVX512 void f32_to_bf16_avx512(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = simd::first_lanes(n - i);
    _mm256_mask_storeu_epi16(dst + i, mask, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, src + i)));
  }
}

// ----- AVX2


FASTVLM_AVX2 void gelu_avx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, simd::gelu_avx2(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) x[i] = gelu(x[i]);
}

FASTVLM_AVX2 void softmax_row_avx2(float* x, int64_t n) {
  int64_t vector_end = n / 8 * 8;
  float max_value = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max_value = std::max(max_value, x[i]);
  const __m256 row_max = _mm256_set1_ps(max_value);
  __m256 sums = _mm256_setzero_ps();
  for (int64_t i = 0; i < vector_end; i += 8) {
    const __m256 e = simd::exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), row_max));
    sums = _mm256_add_ps(sums, e);
    _mm256_storeu_ps(x + i, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sums);
  float sum = 0;
  for (float lane : lanes) sum += lane;
  for (int64_t i = vector_end; i < n; ++i) {
    x[i] = std::exp(x[i] - max_value);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace

void gelu_simd(float* x, int64_t n) {
  const Isa isa = active_isa();
  if (isa >= Isa::Avx512) return gelu_avx512(x, n);
  if (isa >= Isa::Avx2) return gelu_avx2(x, n);
  for (int64_t i = 0; i < n; ++i) x[i] = gelu(x[i]);
}

void f32_to_bf16_simd(const float* src, uint16_t* dst, int64_t n) {
  if (active_isa() >= Isa::Avx512) return f32_to_bf16_avx512(src, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void softmax_rows_simd(float* x, int64_t rows, int64_t cols, uint16_t* bf16_out) {
  const Isa isa = active_isa();
  if (bf16_out && isa < Isa::Avx512)
    throw Error("softmax_rows_simd: bfloat16 output needs AVX512-BF16 (FASTVLM_ISA=" + std::string(isa_name(isa)) + ")");
  if (isa < Isa::Avx2) return softmax_rows(x, rows, cols);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    if (isa >= Isa::Avx512)
      softmax_row_avx512(x + r * cols, cols, bf16_out ? bf16_out + r * cols : nullptr);
    else
      softmax_row_avx2(x + r * cols, cols);
  }
}

}  // namespace fastvlm
