#include "kernels/norms.h"

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

// 1 / sqrt(sum / n + eps): the inverse RMS of a row whose squares sum to `sum`, or the inverse standard
// deviation when `sum` adds up squared deviations from the mean.
float inverse_root_mean(double sum, int64_t n, float eps) { return float(1.0 / std::sqrt(sum / double(n) + eps)); }

// The reference: one double accumulator, element after element (each addition waits for the last).
void rms_norm_scalar(const float* x, const float* weight, int64_t hidden, float eps, float* y) {
  double sum_of_squares = 0;
  for (int64_t i = 0; i < hidden; ++i) sum_of_squares += double(x[i]) * x[i];
  const float scale = inverse_root_mean(sum_of_squares, hidden, eps);
  for (int64_t i = 0; i < hidden; ++i) y[i] = weight[i] * (x[i] * scale);
}

// The reference: the mean, then the squared deviations from it, each summed one element after another.
void layer_norm_scalar(const float* x, const float* weight, const float* bias, int64_t n, float eps, float* y) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / double(n);
  double squares = 0;
  for (int64_t i = 0; i < n; ++i) squares += (x[i] - mean) * (x[i] - mean);
  const float scale = inverse_root_mean(squares, n, eps), center = float(mean);
  for (int64_t i = 0; i < n; ++i) y[i] = weight[i] * ((x[i] - center) * scale) + bias[i];
}

// The sum of the 8 double lanes of two accumulators, in a fixed order.
FASTVLM_TARGET_AVX2 inline double sum_lanes(__m256d low, __m256d high) {
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(low, high));
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

FASTVLM_TARGET_AVX2 void rms_norm_avx2(const float* x, const float* weight, int64_t hidden, float eps, float* y) {
  // Two accumulators of 4 doubles: the additions of one 8-float step do not wait for each other.
  const int64_t whole = hidden / 8 * 8;
  __m256d low = _mm256_setzero_pd(), high = _mm256_setzero_pd();
  for (int64_t i = 0; i < whole; i += 8) {
    const __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), b = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
    low = _mm256_fmadd_pd(a, a, low);
    high = _mm256_fmadd_pd(b, b, high);
  }
  double sum_of_squares = sum_lanes(low, high);
  for (int64_t i = whole; i < hidden; ++i) sum_of_squares += double(x[i]) * x[i];
  const float scale = inverse_root_mean(sum_of_squares, hidden, eps);
  const __m256 scales = _mm256_set1_ps(scale);
  for (int64_t i = 0; i < whole; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(weight + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), scales)));
  for (int64_t i = whole; i < hidden; ++i) y[i] = weight[i] * (x[i] * scale);
}

FASTVLM_TARGET_AVX2 void layer_norm_avx2(const float* x, const float* weight, const float* bias, int64_t n, float eps,
                                         float* y) {
  const int64_t whole = n / 8 * 8;
  __m256d low = _mm256_setzero_pd(), high = _mm256_setzero_pd();
  for (int64_t i = 0; i < whole; i += 8) {
    low = _mm256_add_pd(low, _mm256_cvtps_pd(_mm_loadu_ps(x + i)));
    high = _mm256_add_pd(high, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)));
  }
  double sum = sum_lanes(low, high);
  for (int64_t i = whole; i < n; ++i) sum += x[i];
  const double mean = sum / double(n);
  const __m256d means = _mm256_set1_pd(mean);
  low = high = _mm256_setzero_pd();
  for (int64_t i = 0; i < whole; i += 8) {
    const __m256d a = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), means);
    const __m256d b = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)), means);
    low = _mm256_fmadd_pd(a, a, low);
    high = _mm256_fmadd_pd(b, b, high);
  }
  double squares = sum_lanes(low, high);
  for (int64_t i = whole; i < n; ++i) squares += (x[i] - mean) * (x[i] - mean);
  const float scale = inverse_root_mean(squares, n, eps), center = float(mean);
  const __m256 scales = _mm256_set1_ps(scale), centers = _mm256_set1_ps(center);
  for (int64_t i = 0; i < whole; i += 8) {
    const __m256 normalised = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), centers), scales);
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(weight + i), normalised),
                                          _mm256_loadu_ps(bias + i)));
  }
  for (int64_t i = whole; i < n; ++i) y[i] = weight[i] * ((x[i] - center) * scale) + bias[i];
}

// The float32 lanes of `values` as two vectors of 8 doubles.
FASTVLM_TARGET_AVX512 inline void widen(__m512 values, __m512d& low, __m512d& high) {
  low = _mm512_cvtps_pd(_mm512_castps512_ps256(values));
  high = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(values), 1)));
}

FASTVLM_TARGET_AVX512 void rms_norm_avx512(const float* x, const float* weight, int64_t hidden, float eps,
                                           float* y) {
  __m512d squares_low = _mm512_setzero_pd(), squares_high = _mm512_setzero_pd();
  for (int64_t i = 0; i < hidden; i += 16) {
    __m512d low, high;  // lanes past the row read zeros: they add nothing
    widen(_mm512_maskz_loadu_ps(simd::first_lanes(hidden - i), x + i), low, high);
    squares_low = _mm512_fmadd_pd(low, low, squares_low);
    squares_high = _mm512_fmadd_pd(high, high, squares_high);
  }
  const double sum_of_squares = _mm512_reduce_add_pd(_mm512_add_pd(squares_low, squares_high));
  const __m512 scales = _mm512_set1_ps(inverse_root_mean(sum_of_squares, hidden, eps));
  for (int64_t i = 0; i < hidden; i += 16) {
    const __mmask16 mask = simd::first_lanes(hidden - i);
    const __m512 scaled = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), scales);
    _mm512_mask_storeu_ps(y + i, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, weight + i), scaled));
  }
}

FASTVLM_TARGET_AVX512 void layer_norm_avx512(const float* x, const float* weight, const float* bias, int64_t n,
                                             float eps, float* y) {
  __m512d sum_low = _mm512_setzero_pd(), sum_high = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    __m512d low, high;  // lanes past the row read zeros: they add nothing
    widen(_mm512_maskz_loadu_ps(simd::first_lanes(n - i), x + i), low, high);
    sum_low = _mm512_add_pd(sum_low, low);
    sum_high = _mm512_add_pd(sum_high, high);
  }
  const double mean = _mm512_reduce_add_pd(_mm512_add_pd(sum_low, sum_high)) / double(n);
  const __m512d means = _mm512_set1_pd(mean);
  __m512d squares_low = _mm512_setzero_pd(), squares_high = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = simd::first_lanes(n - i);
    __m512d low, high;
    widen(_mm512_maskz_loadu_ps(mask, x + i), low, high);
    // Deviations of the lanes past the row are zeros, not -mean.
    low = _mm512_maskz_sub_pd(__mmask8(mask), low, means);
    high = _mm512_maskz_sub_pd(__mmask8(mask >> 8), high, means);
    squares_low = _mm512_fmadd_pd(low, low, squares_low);
    squares_high = _mm512_fmadd_pd(high, high, squares_high);
  }
  const float scale = inverse_root_mean(_mm512_reduce_add_pd(_mm512_add_pd(squares_low, squares_high)), n, eps);
  const __m512 scales = _mm512_set1_ps(scale), centers = _mm512_set1_ps(float(mean));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = simd::first_lanes(n - i);
    const __m512 normalised = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), centers), scales);
    _mm512_mask_storeu_ps(y + i, mask, _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mask, weight + i), normalised),
                                                     _mm512_maskz_loadu_ps(mask, bias + i)));
  }
}

struct NormOps {
  void (*rms_norm)(const float*, const float*, int64_t, float, float*);
  void (*layer_norm)(const float*, const float*, const float*, int64_t, float, float*);
};

const NormOps& ops() {
  static const NormOps chosen = kernels::choose<NormOps>({
      .scalar = {rms_norm_scalar, layer_norm_scalar},
      .avx2 = {rms_norm_avx2, layer_norm_avx2},
      .avx512 = {rms_norm_avx512, layer_norm_avx512},
  });
  return chosen;
}

}  // namespace

void rms_norm_rows(const float* x, const float* weight, int64_t rows, int64_t hidden, float eps, float* y) {
  const auto row_kernel = ops().rms_norm;
  // Below this many floats one thread is done before a team would wake (one decode row of any size).
  constexpr int64_t kMinFloatsToSplit = int64_t(1) << 16;
#pragma omp parallel for schedule(static) if (rows > 1 && rows * hidden >= kMinFloatsToSplit)
  for (int64_t r = 0; r < rows; ++r) row_kernel(x + r * hidden, weight, hidden, eps, y + r * hidden);
}

void layer_norm_row(const float* x, const float* weight, const float* bias, int64_t n, float eps, float* y) {
  ops().layer_norm(x, weight, bias, n, eps, y);
}

}  // namespace fastvlm
