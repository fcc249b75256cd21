#include "vision/int8_quant.h"

#include <immintrin.h>

#include <vector>

#include "core/simd_gelu.h"
#include "core/simd_mask.h"

// GCC 12's AVX-512 intrinsics initialise their undefined-vector placeholders with themselves, which
// trips these warnings inside the headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define FASTVLM_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")))

namespace fastvlm {
namespace {

constexpr float kMaxCode = 127.0f;

// acc · scales + bias (bias may be null) for the 16 columns at `acc` in `mask`.
FASTVLM_AVX512 inline __m512 dequantize(const int32_t* acc, __m512 scales, const float* bias, __mmask16 mask) {
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mask, acc)), scales,
                         bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps());
}

// Quantises one row of `cols` floats whose max |x| is `abs_max`; returns its scale.
FASTVLM_AVX512 float quantize_row(const float* row, int64_t cols, float abs_max, int8_t* codes) {
  const float scale = abs_max > 0.0f ? abs_max / kMaxCode : 1.0f;
  // Round to nearest even (the default MXCSR mode), then saturate; |x| <= 127 · scale, so saturation
  // never bites.
  const __m512 inverse = _mm512_set1_ps(1.0f / scale);
  for (int64_t c = 0; c < cols; c += 16) {
    const __mmask16 mask = simd::first_lanes(cols - c);
    const __m512i rounded = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(mask, row + c), inverse));
    _mm512_mask_cvtsepi32_storeu_epi8(codes + c, mask, rounded);
  }
  return scale;
}

FASTVLM_AVX512 float row_abs_max(const float* row, int64_t cols) {
  __m512 running = _mm512_setzero_ps();
  for (int64_t c = 0; c < cols; c += 16)
    running = _mm512_max_ps(running, _mm512_abs_ps(_mm512_maskz_loadu_ps(simd::first_lanes(cols - c), row + c)));
  return _mm512_reduce_max_ps(running);
}

}  // namespace

void quantize_rows_s8(const float* x, int64_t rows, int64_t cols, int64_t stride, int8_t* codes, float* scales) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * stride;
    scales[r] = quantize_row(row, cols, row_abs_max(row, cols), codes + r * cols);
  }
}

FASTVLM_AVX512 void dequantize_gelu_quantize(const int32_t* acc, int64_t rows, int64_t cols, const float* row_scales,
                                             const float* weight_scales, const float* bias, int8_t* codes,
                                             float* code_scales) {
  thread_local std::vector<float> activated;
  activated.resize(size_t(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 row_scale = _mm512_set1_ps(row_scales[r]);
    __m512 running = _mm512_setzero_ps();
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = simd::first_lanes(cols - c);
      const __m512 scales = _mm512_mul_ps(row_scale, _mm512_maskz_loadu_ps(mask, weight_scales + c));
      const __m512 value = dequantize(acc + r * cols + c, scales, bias ? bias + c : nullptr, mask);
      // The row is requantised to 8 bits right after: the coarse GELU's error is far below a step.
      const __m512 result = _mm512_maskz_mov_ps(mask, simd::gelu_coarse_avx512(value));
      _mm512_mask_storeu_ps(activated.data() + c, mask, result);
      running = _mm512_max_ps(running, _mm512_abs_ps(result));
    }
    code_scales[r] = quantize_row(activated.data(), cols, _mm512_reduce_max_ps(running), codes + r * cols);
  }
}

__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))) void dequantize_store(
    const int32_t* acc, int64_t rows, int64_t cols, const float* row_scales, const float* weight_scales,
    const float* bias, bool gelu, float* out_f32, uint16_t* out_bf16) {
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 row_scale = _mm512_set1_ps(row_scales[r]);
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = simd::first_lanes(cols - c);
      const __m512 scales = _mm512_mul_ps(row_scale, _mm512_maskz_loadu_ps(mask, weight_scales + c));
      __m512 value = dequantize(acc + r * cols + c, scales, bias ? bias + c : nullptr, mask);
      if (gelu) value = simd::gelu_avx512(value);
      if (out_f32)
        _mm512_mask_storeu_ps(out_f32 + r * cols + c, mask, value);
      else
        _mm256_mask_storeu_epi16(out_bf16 + r * cols + c, mask, (__m256i)_mm512_cvtneps_pbh(value));
    }
  }
}

FASTVLM_AVX512 void dequantize_add(const int32_t* acc, int64_t rows, int64_t cols, const float* row_scales,
                                   const float* weight_scales, const float* bias, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 row_scale = _mm512_set1_ps(row_scales[r]);
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = simd::first_lanes(cols - c);
      const __m512 scales = _mm512_mul_ps(row_scale, _mm512_maskz_loadu_ps(mask, weight_scales + c));
      float* target = out + r * cols + c;
      const __m512 value = dequantize(acc + r * cols + c, scales, bias ? bias + c : nullptr, mask);
      _mm512_mask_storeu_ps(target, mask, _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, target)));
    }
  }
}

}  // namespace fastvlm
