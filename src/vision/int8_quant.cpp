#include "vision/int8_quant.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "core/simd_gelu.h"

// GCC 12's AVX-512 intrinsics initialise their undefined-vector placeholders with themselves, which
// trips these warnings inside the headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastvlm {
namespace {

constexpr float kMaxCode = 127.0f;

float scale_for(float abs_max) { return abs_max > 0.0f ? abs_max / kMaxCode : 1.0f; }

__attribute__((target("avx512f,avx512bw"))) float block_abs_max(const float* src, int64_t rows, int64_t cols,
                                                                int64_t stride) {
  __m512 running = _mm512_setzero_ps();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = src + r * stride;
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) running = _mm512_max_ps(running, _mm512_abs_ps(_mm512_loadu_ps(row + c)));
    if (c < cols) {
      const __mmask16 tail = __mmask16((1u << (cols - c)) - 1);
      running = _mm512_max_ps(running, _mm512_abs_ps(_mm512_maskz_loadu_ps(tail, row + c)));
    }
  }
  return _mm512_reduce_max_ps(running);
}

// round-to-nearest-even (the default MXCSR mode) then saturate to [-128, 127]; |x| <= 127 · scale, so
// the saturation never bites.
__attribute__((target("avx512f,avx512bw"))) void block_to_codes(const float* src, int64_t rows, int64_t cols,
                                                               int64_t stride, float inverse_scale, int8_t* dst) {
  const __m512 inverse = _mm512_set1_ps(inverse_scale);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = src + r * stride;
    int8_t* out = dst + r * cols;
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
      const __m512i codes = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(row + c), inverse));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), _mm512_cvtsepi32_epi8(codes));
    }
    if (c < cols) {
      const __mmask16 tail = __mmask16((1u << (cols - c)) - 1);
      const __m512i codes = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, row + c), inverse));
      _mm512_mask_cvtsepi32_storeu_epi8(out + c, tail, codes);
    }
  }
}

// acc · scales + bias (bias may be null) for the 16 columns at `acc` in `mask`.
__attribute__((target("avx512f"))) inline __m512 dequantize(const int32_t* acc, const float* scales, const float* bias,
                                                             __mmask16 mask) {
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mask, acc)), _mm512_maskz_loadu_ps(mask, scales),
                         bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps());
}

__attribute__((target("avx512f"))) inline __mmask16 column_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
}

}  // namespace

// One pass per element while the accumulators are in cache: dequantise, add the bias, GELU, store, and
// track max |GELU| for the quantisation of the next product.
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq"))) float dequantize_gelu(
    const int32_t* acc, int64_t rows, int64_t cols, const float* scales, const float* bias, float* out) {
  __m512 running = _mm512_setzero_ps();
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* row = acc + r * cols;
    float* out_row = out + r * cols;
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = column_mask(cols - c);
      const __m512 value = dequantize(row + c, scales + c, bias ? bias + c : nullptr, mask);
      const __m512 activated = _mm512_maskz_mov_ps(mask, simd::gelu_avx512(value));
      _mm512_mask_storeu_ps(out_row + c, mask, activated);
      running = _mm512_max_ps(running, _mm512_abs_ps(activated));
    }
  }
  return _mm512_reduce_max_ps(running);
}

__attribute__((target("avx512f"))) void dequantize_add(const int32_t* acc, int64_t rows, int64_t cols,
                                                       const float* scales, const float* bias, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = column_mask(cols - c);
      const __m512 value = dequantize(acc + r * cols + c, scales + c, bias ? bias + c : nullptr, mask);
      float* target = out + r * cols + c;
      _mm512_mask_storeu_ps(target, mask, _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, target)));
    }
  }
}

float quantize_block_s8_with_max(const float* src, int64_t rows, int64_t cols, int64_t src_stride, float abs_max,
                                 int8_t* dst) {
  const float scale = scale_for(abs_max);
  block_to_codes(src, rows, cols, src_stride, 1.0f / scale, dst);
  return scale;
}

void quantize_rows_s8(const float* weights, int64_t rows, int64_t cols, int8_t* codes, float* scales) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = weights + r * cols;
    float abs_max = 0.0f;
    for (int64_t c = 0; c < cols; ++c) abs_max = std::max(abs_max, std::abs(row[c]));
    scales[r] = scale_for(abs_max);
    for (int64_t c = 0; c < cols; ++c) codes[r * cols + c] = int8_t(std::nearbyint(row[c] / scales[r]));
  }
}

float quantize_block_s8(const float* src, int64_t rows, int64_t cols, int64_t src_stride, int8_t* dst) {
  return quantize_block_s8_with_max(src, rows, cols, src_stride, block_abs_max(src, rows, cols, src_stride), dst);
}

}  // namespace fastvlm
