#include "llm/activations.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/dtype.h"
#include "core/ops.h"
#include "core/simd_exp.h"
#include "core/simd_mask.h"

// GCC 12 flags the deliberately undefined upper halves inside its own AVX-512 reduction intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define FASTVLM_TARGET_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")))
#define FASTVLM_TARGET_AVX512_BF16 \
  __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

namespace fastvlm {
namespace {

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

FASTVLM_TARGET_AVX512 void softmax_row_avx512(float* x, int64_t n) {
  const int64_t vector_end = n / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (n - vector_end)) - 1);
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 running_max = lowest;
  for (int64_t i = 0; i < vector_end; i += 16) running_max = _mm512_max_ps(running_max, _mm512_loadu_ps(x + i));
  if (tail) running_max = _mm512_max_ps(running_max, _mm512_mask_loadu_ps(lowest, tail, x + vector_end));
  const __m512 largest = _mm512_set1_ps(_mm512_reduce_max_ps(running_max));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < vector_end; i += 16) {
    const __m512 e = simd::exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), largest));
    _mm512_storeu_ps(x + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (tail) {
    const __m512 e = _mm512_maskz_mov_ps(tail, simd::exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + vector_end), largest)));
    _mm512_mask_storeu_ps(x + vector_end, tail, e);
    sum = _mm512_add_ps(sum, e);
  }
  const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
  for (int64_t i = 0; i < vector_end; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inverse));
  if (tail) _mm512_mask_storeu_ps(x + vector_end, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + vector_end), inverse));
}

FASTVLM_TARGET_AVX512_BF16 inline void store_masked(float* out, __mmask16 lanes, __m512 values) {
  _mm512_mask_storeu_ps(out, lanes, values);
}
FASTVLM_TARGET_AVX512_BF16 inline void store_masked(uint16_t* out, __mmask16 lanes, __m512 values) {
  _mm256_mask_storeu_epi16(out, lanes, (__m256i)_mm512_cvtneps_pbh(values));
}

// 1 <= valid <= width here.
template <typename Probability>
FASTVLM_TARGET_AVX512_BF16 float online_softmax_tile_avx512(const float* scores, int64_t valid, int64_t width,
                                                            float scale, float& running_max, float& running_sum,
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

inline void store_scalar(float* out, float value) { *out = value; }
inline void store_scalar(uint16_t* out, float value) { *out = f32_to_bf16(value); }

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

template <typename Probability>
float online_softmax_tile_dispatch(const float* scores, int64_t valid, int64_t width, float scale,
                                   float& running_max, float& running_sum, Probability* probabilities, Isa isa) {
  if (valid <= 0) {  // the whole tile is above the diagonal for this row: it contributes nothing
    std::fill(probabilities, probabilities + width, Probability(0));
    return 1.0f;
  }
  valid = std::min(valid, width);
  if (isa >= Isa::Avx512)
    return online_softmax_tile_avx512(scores, valid, width, scale, running_max, running_sum, probabilities);
  return online_softmax_tile_scalar(scores, valid, width, scale, running_max, running_sum, probabilities);
}

}  // namespace

float online_softmax_tile(const float* scores, int64_t valid, int64_t width, float scale, float& running_max,
                          float& running_sum, float* probabilities, Isa isa) {
  return online_softmax_tile_dispatch(scores, valid, width, scale, running_max, running_sum, probabilities, isa);
}

float online_softmax_tile(const float* scores, int64_t valid, int64_t width, float scale, float& running_max,
                          float& running_sum, uint16_t* probabilities, Isa isa) {
  return online_softmax_tile_dispatch(scores, valid, width, scale, running_max, running_sum, probabilities, isa);
}

void silu_multiply(float* gate, const float* up, int64_t n, Isa isa) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t begin = chunk * kChunk;
    const int64_t length = std::min(kChunk, n - begin);
    if (isa >= Isa::Avx512) {
      silu_multiply_avx512(gate + begin, up + begin, length);
    } else {
      for (int64_t i = begin; i < begin + length; ++i) gate[i] = silu(gate[i]) * up[i];
    }
  }
}

void softmax_row(float* x, int64_t n, Isa isa) {
  if (isa >= Isa::Avx512) {
    softmax_row_avx512(x, n);
  } else {
    softmax_rows(x, 1, n);
  }
}

}  // namespace fastvlm
