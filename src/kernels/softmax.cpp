#include "kernels/softmax.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/capabilities.h"
#include "kernels/dispatch.h"
#include "kernels/quant_simd.h"
#include "kernels/simd_exp.h"
#include "kernels/simd_mask.h"
#include "kernels/target.h"

// GCC 12 flags the deliberately undefined upper halves inside its own AVX-512 reduction intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastvlm {
namespace {

inline void store_scalar(float* out, float value) { *out = value; }
inline void store_scalar(uint16_t* out, float value) { *out = f32_to_bf16(value); }

// ----- Scalar

void softmax_row_scalar(float* x, int64_t n) {
  const float max_value = *std::max_element(x, x + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max_value);
    sum += x[i];
  }
  const float inverse = float(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inverse;
}

// 1 <= valid <= width here (run_tile handles the rest).
template <typename Probability>
float online_softmax_tile_scalar(const float* scores, int64_t valid, int64_t width, float scale, float& running_max,
                                 float& running_sum, Probability* probabilities) {
  const float new_max = std::max(running_max, *std::max_element(scores, scores + valid));
  float sum = 0;
  for (int64_t i = 0; i < valid; ++i) {
    const float p = std::exp(scale * (scores[i] - new_max));
    store_scalar(probabilities + i, p);
    sum += p;
  }
  for (int64_t i = valid; i < width; ++i) store_scalar(probabilities + i, 0.0f);
  const float correction = std::exp(scale * (running_max - new_max));
  running_sum = running_sum * correction + sum;
  running_max = new_max;
  return correction;
}

// ----- AVX2

// The largest of n floats, with four running maxima (one would make the pass a chain of max latencies;
// std::max_element, element by element, took about half of the vision tower's softmax time).
FASTVLM_TARGET_AVX2 float row_max_avx2(const float* x, int64_t n) {
  const __m256 lowest = _mm256_set1_ps(-INFINITY);
  __m256 max[4] = {lowest, lowest, lowest, lowest};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int k = 0; k < 4; ++k) max[k] = _mm256_max_ps(max[k], _mm256_loadu_ps(x + i + 8 * k));
  for (; i + 8 <= n; i += 8) max[0] = _mm256_max_ps(max[0], _mm256_loadu_ps(x + i));
  float result = simd::reduce_max_avx2(_mm256_max_ps(_mm256_max_ps(max[0], max[1]), _mm256_max_ps(max[2], max[3])));
  for (; i < n; ++i) result = std::max(result, x[i]);
  return result;
}

FASTVLM_TARGET_AVX2 void softmax_row_avx2(float* x, int64_t n) {
  const int64_t vector_end = n / 8 * 8;
  const float max_value = row_max_avx2(x, n);
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
  const float inverse = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inverse;
}

// The float tile of online_softmax_tile (the one the f32 attention of AVX2 CPUs runs); 1 <= valid <= width
// here. Masked lanes load nothing and are zeroed after the exp.
FASTVLM_TARGET_AVX2 float online_softmax_tile_avx2(const float* scores, int64_t valid, int64_t width, float scale,
                                                   float& running_max, float& running_sum, float* probabilities) {
  const float new_max = std::max(running_max, row_max_avx2(scores, valid));
  const __m256 scale_vector = _mm256_set1_ps(scale), scaled_max = _mm256_set1_ps(scale * new_max);
  __m256 sums = _mm256_setzero_ps();
  for (int64_t i = 0; i < width; i += 8) {
    const __m256i visible = simd::first_lanes_avx2(valid - i);
    const __m256 exponent = _mm256_fmsub_ps(_mm256_maskload_ps(scores + i, visible), scale_vector, scaled_max);
    const __m256 p = _mm256_and_ps(_mm256_castsi256_ps(visible), simd::exp_avx2(exponent));
    if (i + 8 <= width) {
      _mm256_storeu_ps(probabilities + i, p);
    } else {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, p);
      std::copy(lanes, lanes + (width - i), probabilities + i);
    }
    sums = _mm256_add_ps(sums, p);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sums);
  float sum = 0;
  for (float lane : lanes) sum += lane;
  const float correction = std::exp(scale * (running_max - new_max));  // 0 on the first tile (max -inf)
  running_sum = running_sum * correction + sum;
  running_max = new_max;
  return correction;
}

// ----- AVX-512

// The largest of n floats, with four running maxima: one would make the pass a chain of max latencies.
FASTVLM_TARGET_AVX512 float row_max_avx512(const float* x, int64_t n) {
  const __m512 lowest = _mm512_set1_ps(-INFINITY);
  __m512 max[4] = {lowest, lowest, lowest, lowest};
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int k = 0; k < 4; ++k) max[k] = _mm512_max_ps(max[k], _mm512_loadu_ps(x + i + 16 * k));
  for (; i < n; i += 16) max[0] = _mm512_max_ps(max[0], _mm512_mask_loadu_ps(lowest, simd::first_lanes(n - i), x + i));
  return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(max[0], max[1]), _mm512_max_ps(max[2], max[3])));
}

FASTVLM_TARGET_AVX512 void softmax_row_avx512(float* x, int64_t n) {
  const __m512 row_max = _mm512_set1_ps(row_max_avx512(x, n));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = simd::first_lanes(n - i);
    const __m512 e = simd::exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), row_max));
    sum = _mm512_mask_add_ps(sum, mask, sum, e);
    _mm512_mask_storeu_ps(x + i, mask, e);
  }
  const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = simd::first_lanes(n - i);
    _mm512_mask_storeu_ps(x + i, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), inverse));
  }
}

// One row of softmax_numerators_bf16; returns its sum. Two sums, so that the adds are not one chain.
FASTVLM_TARGET_AVX512 float softmax_numerators_avx512(const float* x, int64_t n, uint16_t* numerators) {
  const __m512 row_max = _mm512_set1_ps(row_max_avx512(x, n));
  __m512 sum[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  const auto step = [&](int64_t i, __mmask16 mask, int k) FASTVLM_TARGET_AVX512 {
    const __m512 e = _mm512_maskz_mov_ps(
        mask, simd::exp_nonpositive_coarse_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), row_max)));
    sum[k] = _mm512_add_ps(sum[k], e);
    _mm256_mask_storeu_epi16(numerators + i, mask, (__m256i)_mm512_cvtneps_pbh(e));
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    step(i, 0xFFFF, 0);
    step(i + 16, 0xFFFF, 1);
  }
  for (; i < n; i += 16) step(i, simd::first_lanes(n - i), 0);
  return _mm512_reduce_add_ps(_mm512_add_ps(sum[0], sum[1]));
}

FASTVLM_TARGET_AVX512 inline void store_masked(float* out, __mmask16 lanes, __m512 values) {
  _mm512_mask_storeu_ps(out, lanes, values);
}
FASTVLM_TARGET_AVX512 inline void store_masked(uint16_t* out, __mmask16 lanes, __m512 values) {
  _mm256_mask_storeu_epi16(out, lanes, (__m256i)_mm512_cvtneps_pbh(values));
}

// 1 <= valid <= width here.
template <typename Probability>
FASTVLM_TARGET_AVX512 float online_softmax_tile_avx512(const float* scores, int64_t valid, int64_t width, float scale,
                                                       float& running_max, float& running_sum,
                                                       Probability* probabilities) {
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 tile_max = lowest;
  for (int64_t i = 0; i < valid; i += 16)
    tile_max = _mm512_max_ps(tile_max, _mm512_mask_loadu_ps(lowest, simd::first_lanes(valid - i), scores + i));
  const float new_max = std::max(running_max, _mm512_reduce_max_ps(tile_max));
  const __m512 scale_vector = _mm512_set1_ps(scale);
  const __m512 scaled_max = _mm512_set1_ps(scale * new_max);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < width; i += 16) {
    const __mmask16 visible = simd::first_lanes(valid - i);
    const __m512 p = _mm512_maskz_mov_ps(
        visible, simd::exp_avx512(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(visible, scores + i), scale_vector, scaled_max)));
    store_masked(probabilities + i, simd::first_lanes(width - i), p);
    sum = _mm512_add_ps(sum, p);
  }
  const float correction = std::exp(scale * (running_max - new_max));  // 0 on the first tile (max -inf)
  running_sum = running_sum * correction + _mm512_reduce_add_ps(sum);
  running_max = new_max;
  return correction;
}

template <typename Probability>
using TileKernel = float (*)(const float*, int64_t, int64_t, float, float&, float&, Probability*);

struct SoftmaxOps {
  void (*row)(float*, int64_t);
  float (*numerators)(const float*, int64_t, uint16_t*);  // null below AVX-512
  TileKernel<float> tile_f32;
  TileKernel<uint16_t> tile_bf16;
};

const SoftmaxOps& ops() {
  static const SoftmaxOps chosen = kernels::choose<SoftmaxOps>({
      .scalar = {softmax_row_scalar, nullptr, online_softmax_tile_scalar<float>, online_softmax_tile_scalar<uint16_t>},
      .avx2 = {softmax_row_avx2, nullptr, online_softmax_tile_avx2, online_softmax_tile_scalar<uint16_t>},
      .avx512 = {softmax_row_avx512, softmax_numerators_avx512, online_softmax_tile_avx512<float>,
                 online_softmax_tile_avx512<uint16_t>},
  });
  return chosen;
}

template <typename Probability>
float run_tile(TileKernel<Probability> kernel, const float* scores, int64_t valid, int64_t width, float scale,
               float& running_max, float& running_sum, Probability* probabilities) {
  if (valid <= 0) {  // the whole tile is above the diagonal for this row: it contributes nothing
    std::fill(probabilities, probabilities + width, Probability(0));
    return 1.0f;
  }
  return kernel(scores, std::min(valid, width), width, scale, running_max, running_sum, probabilities);
}

}  // namespace

void softmax_row(float* x, int64_t n) { ops().row(x, n); }

void softmax_rows(float* x, int64_t rows, int64_t cols) {
  const SoftmaxOps& chosen = ops();
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) chosen.row(x + r * cols, cols);
}

void softmax_numerators_bf16(const float* x, int64_t rows, int64_t cols, uint16_t* numerators, float* sums) {
  const SoftmaxOps& chosen = ops();
  if (!chosen.numerators)
    throw Error("softmax_numerators_bf16: bfloat16 output needs AVX512-BF16 (FASTVLM_ISA=" +
                kernels::kernel_level_name() + ")");
  for (int64_t r = 0; r < rows; ++r) sums[r] = chosen.numerators(x + r * cols, cols, numerators + r * cols);
}

float online_softmax_tile(const float* scores, int64_t valid, int64_t width, float scale, float& running_max,
                          float& running_sum, float* probabilities) {
  return run_tile(ops().tile_f32, scores, valid, width, scale, running_max, running_sum, probabilities);
}

float online_softmax_tile(const float* scores, int64_t valid, int64_t width, float scale, float& running_max,
                          float& running_sum, uint16_t* probabilities) {
  return run_tile(ops().tile_bf16, scores, valid, width, scale, running_max, running_sum, probabilities);
}

}  // namespace fastvlm
