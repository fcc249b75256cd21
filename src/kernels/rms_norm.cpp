#include "kernels/rms_norm.h"

#include <immintrin.h>

// GCC 12's AVX-512 headers build unmasked results from _mm512_undefined_*(), which -O3 reports as
// "may be used uninitialized" once inlined; the lanes are all written.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cmath>

#include "kernels/dispatch.h"
#include "kernels/simd_mask.h"
#include "kernels/target.h"

namespace fastvlm {
namespace {

// 1 / sqrt(mean + eps) of a row whose squares sum to `sum_of_squares`.
float inverse_rms(double sum_of_squares, int64_t hidden, float eps) {
  return float(1.0 / std::sqrt(sum_of_squares / double(hidden) + eps));
}

// The reference: one double accumulator, element after element (each addition waits for the last).
void rms_norm_scalar(const float* x, const float* weight, int64_t hidden, float eps, float* y) {
  double sum_of_squares = 0;
  for (int64_t i = 0; i < hidden; ++i) sum_of_squares += double(x[i]) * x[i];
  const float scale = inverse_rms(sum_of_squares, hidden, eps);
  for (int64_t i = 0; i < hidden; ++i) y[i] = weight[i] * (x[i] * scale);
}

FASTVLM_TARGET_AVX2 void rms_norm_avx2(const float* x, const float* weight, int64_t hidden, float eps, float* y) {
  // Two accumulators of 4 doubles: the additions of one 8-float step do not wait for each other.
  __m256d low = _mm256_setzero_pd(), high = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= hidden; i += 8) {
    const __m128 first = _mm_loadu_ps(x + i), second = _mm_loadu_ps(x + i + 4);
    const __m256d a = _mm256_cvtps_pd(first), b = _mm256_cvtps_pd(second);
    low = _mm256_fmadd_pd(a, a, low);
    high = _mm256_fmadd_pd(b, b, high);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(low, high));
  double sum_of_squares = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; i < hidden; ++i) sum_of_squares += double(x[i]) * x[i];
  const float scale = inverse_rms(sum_of_squares, hidden, eps);
  const __m256 scales = _mm256_set1_ps(scale);
  i = 0;
  for (; i + 8 <= hidden; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(weight + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), scales)));
  for (; i < hidden; ++i) y[i] = weight[i] * (x[i] * scale);
}

FASTVLM_TARGET_AVX512 void rms_norm_avx512(const float* x, const float* weight, int64_t hidden, float eps,
                                           float* y) {
  __m512d low = _mm512_setzero_pd(), high = _mm512_setzero_pd();
  for (int64_t i = 0; i < hidden; i += 16) {
    const __mmask16 mask = simd::first_lanes(hidden - i);
    const __m512 values = _mm512_maskz_loadu_ps(mask, x + i);  // lanes past the row are zeros: they add nothing
    const __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(values));
    const __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(values), 1)));
    low = _mm512_fmadd_pd(a, a, low);
    high = _mm512_fmadd_pd(b, b, high);
  }
  const __m512 scales = _mm512_set1_ps(inverse_rms(_mm512_reduce_add_pd(_mm512_add_pd(low, high)), hidden, eps));
  for (int64_t i = 0; i < hidden; i += 16) {
    const __mmask16 mask = simd::first_lanes(hidden - i);
    const __m512 scaled = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), scales);
    _mm512_mask_storeu_ps(y + i, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, weight + i), scaled));
  }
}

using RmsNormRow = void (*)(const float*, const float*, int64_t, float, float*);

RmsNormRow variant() {
  static const RmsNormRow chosen = kernels::choose<RmsNormRow>({
      .scalar = rms_norm_scalar,
      .avx2 = rms_norm_avx2,
      .avx512 = rms_norm_avx512,
  });
  return chosen;
}

}  // namespace

void rms_norm_rows(const float* x, const float* weight, int64_t rows, int64_t hidden, float eps, float* y) {
  const RmsNormRow row_kernel = variant();
  // Below this many floats one thread is done before a team would wake (one decode row of any size).
  constexpr int64_t kMinFloatsToSplit = int64_t(1) << 16;
#pragma omp parallel for schedule(static) if (rows > 1 && rows * hidden >= kMinFloatsToSplit)
  for (int64_t r = 0; r < rows; ++r) row_kernel(x + r * hidden, weight, hidden, eps, y + r * hidden);
}

}  // namespace fastvlm
