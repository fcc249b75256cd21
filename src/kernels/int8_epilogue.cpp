#include "kernels/int8_epilogue.h"

#include <immintrin.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernels/capabilities.h"
#include "kernels/dispatch.h"
#include "kernels/quant_simd.h"
#include "kernels/simd_gelu.h"
#include "kernels/simd_mask.h"
#include "kernels/target.h"

// GCC 12's AVX-512 intrinsics initialise their undefined-vector placeholders with themselves, which
// trips these warnings inside the headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastvlm {
namespace {

constexpr float kMaxCode = 127.0f;

// acc · scales + bias (bias may be null) for the 16 columns at `acc` in `mask`.
FASTVLM_TARGET_AVX512 inline __m512 dequantize(const int32_t* acc, __m512 scales, const float* bias, __mmask16 mask) {
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mask, acc)), scales,
                         bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps());
}

// 16 floats times `inverse`, rounded to nearest even (the default MXCSR mode) as int32.
FASTVLM_TARGET_AVX512 inline __m512i rounded(const float* values, __m512 inverse) {
  return _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(values), inverse));
}

// Quantises one row of `cols` floats whose max |x| is `abs_max`; returns its scale.
FASTVLM_TARGET_AVX512 inline __attribute__((always_inline)) float quantize_row(const float* row, int64_t cols, float abs_max,
                                                                          int8_t* codes) {
  const float scale = abs_max > 0.0f ? abs_max / kMaxCode : 1.0f;
  // Round to nearest even, then saturate; |x| <= 127 · scale, so saturation never bites.
  const __m512 inverse = _mm512_set1_ps(1.0f / scale);
  // 64 codes per store: two saturating packs narrow four vectors at once (vpmovsdb narrows one at twice
  // the shuffle cost). Each 128-bit lane L then holds codes 4L..4L+3 of each of the four vectors in turn,
  // and one dword permutation puts them back in order.
  const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
  int64_t c = 0;
  for (; c + 64 <= cols; c += 64) {
    const __m512i words_low = _mm512_packs_epi32(rounded(row + c, inverse), rounded(row + c + 16, inverse));
    const __m512i words_high = _mm512_packs_epi32(rounded(row + c + 32, inverse), rounded(row + c + 48, inverse));
    _mm512_storeu_si512(codes + c, _mm512_permutexvar_epi32(order, _mm512_packs_epi16(words_low, words_high)));
  }
  for (; c < cols; c += 16) {
    const __mmask16 mask = simd::first_lanes(cols - c);
    const __m512i values = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(mask, row + c), inverse));
    _mm512_mask_cvtsepi32_storeu_epi8(codes + c, mask, values);
  }
  return scale;
}

// max(|running|, |values|) with the sign cleared (imm 0b1011) in one instruction; running is never negative.
FASTVLM_TARGET_AVX512 inline __m512 running_abs_max(__m512 running, __m512 values) {
  return _mm512_range_ps(running, values, 0x0B);
}

// Two running maxima over whole vectors, so that the pass is not one chain of max latencies.
FASTVLM_TARGET_AVX512 inline __attribute__((always_inline)) float row_abs_max(const float* row, int64_t cols) {
  __m512 running[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  int64_t c = 0;
  for (; c + 32 <= cols; c += 32)
    for (int k = 0; k < 2; ++k) running[k] = running_abs_max(running[k], _mm512_loadu_ps(row + c + 16 * k));
  for (; c < cols; c += 16)
    running[0] = running_abs_max(running[0], _mm512_maskz_loadu_ps(simd::first_lanes(cols - c), row + c));
  return _mm512_reduce_max_ps(_mm512_max_ps(running[0], running[1]));
}

FASTVLM_TARGET_AVX512 void quantize_rows_s8_avx512(const float* x, int64_t rows, int64_t cols, int64_t stride, int8_t* codes, float* scales) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * stride;
    scales[r] = quantize_row(row, cols, row_abs_max(row, cols), codes + r * cols);
  }
}

// step(column, mask) for each 16-column vector of a row of `cols`: the whole vectors with a constant
// all-lanes mask, which compiles to plain loads and stores with no mask to compute per vector, then the
// masked remainder. `step` must be compiled for AVX-512 too (FASTVLM_TARGET_AVX512 on the lambda).
template <class Step>
FASTVLM_TARGET_AVX512 inline __attribute__((always_inline)) void for_each_vector(int64_t cols, Step step) {
  const int64_t full = cols / 16 * 16;
  for (int64_t c = 0; c < full; c += 16) step(c, __mmask16(0xFFFF));
  if (full < cols) step(full, simd::first_lanes(cols - full));
}

// gelu(acc · row_scale · weight_scales + bias) for the 16 columns at `column` in `mask`, stored to `out`;
// returns the running max |result|. Lanes past the row read zeros and GELU(0) = 0, so they leave the
// running max alone.
FASTVLM_TARGET_AVX512 inline __m512 activate(const int32_t* acc, __m512 row_scale, const float* weight_scales,
                                             const float* bias, int64_t column, __mmask16 mask, float* out,
                                             __m512 running) {
  const __m512 scales = _mm512_mul_ps(row_scale, _mm512_maskz_loadu_ps(mask, weight_scales + column));
  // The row is requantised to 8 bits right after: the coarse GELU's error is far below a step.
  const __m512 result = simd::gelu_coarse_avx512(dequantize(acc + column, scales, bias ? bias + column : nullptr, mask));
  _mm512_mask_storeu_ps(out + column, mask, result);
  return running_abs_max(running, result);
}

FASTVLM_TARGET_AVX512 void dequantize_gelu_quantize_avx512(const int32_t* acc, int64_t rows, int64_t cols,
                                                           int64_t acc_stride, const float* row_scales,
                                                           const float* weight_scales, const float* bias,
                                                           int8_t* codes, float* code_scales) {
  thread_local std::vector<float> staging;
  staging.resize(size_t(cols));
  // Read once: the address of a thread_local is a call to __tls_get_addr (with a vzeroupper and a spill
  // of the running max around it) wherever the loop would name it.
  float* const activated = staging.data();
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 row_scale = _mm512_set1_ps(row_scales[r]);
    const int32_t* row = acc + r * acc_stride;
    __m512 running = _mm512_setzero_ps();
    for_each_vector(cols, [&](int64_t c, __mmask16 mask) FASTVLM_TARGET_AVX512 {
      running = activate(row, row_scale, weight_scales, bias, c, mask, activated, running);
    });
    code_scales[r] = quantize_row(activated, cols, _mm512_reduce_max_ps(running), codes + r * cols);
  }
}

FASTVLM_TARGET_AVX512 void dequantize_store_avx512(
    const int32_t* acc, int64_t rows, int64_t cols, int64_t acc_stride, const float* row_scales,
    const float* weight_scales, const float* bias, bool gelu, float* out_f32, uint16_t* out_bf16) {
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 row_scale = _mm512_set1_ps(row_scales[r]);
    for_each_vector(cols, [&](int64_t c, __mmask16 mask) FASTVLM_TARGET_AVX512 {
      const __m512 scales = _mm512_mul_ps(row_scale, _mm512_maskz_loadu_ps(mask, weight_scales + c));
      __m512 value = dequantize(acc + r * acc_stride + c, scales, bias ? bias + c : nullptr, mask);
      if (gelu) value = simd::gelu_avx512(value);
      if (out_f32)
        _mm512_mask_storeu_ps(out_f32 + r * cols + c, mask, value);
      else
        _mm256_mask_storeu_epi16(out_bf16 + r * cols + c, mask, (__m256i)_mm512_cvtneps_pbh(value));
    });
  }
}

FASTVLM_TARGET_AVX512 void dequantize_add_avx512(const int32_t* acc, int64_t rows, int64_t cols,
                                                 int64_t acc_stride, const float* row_scales,
                                                 const float* weight_scales, const float* bias, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const __m512 row_scale = _mm512_set1_ps(row_scales[r]);
    for_each_vector(cols, [&](int64_t c, __mmask16 mask) FASTVLM_TARGET_AVX512 {
      const __m512 scales = _mm512_mul_ps(row_scale, _mm512_maskz_loadu_ps(mask, weight_scales + c));
      float* target = out + r * cols + c;
      const __m512 value = dequantize(acc + r * acc_stride + c, scales, bias ? bias + c : nullptr, mask);
      _mm512_mask_storeu_ps(target, mask, _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, target)));
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// AVX2 (the tower's int8 compute without AVX512-VNNI, kernels/avx2_int8_gemm.h): the same arithmetic on 8
// lanes. The whole vectors use plain loads and stores, the remainder VMASKMOV (slow on AMD, once per row).

struct WholeVector {
  FASTVLM_TARGET_AVX2 __m256 load(const float* p) const { return _mm256_loadu_ps(p); }
  FASTVLM_TARGET_AVX2 __m256i load(const int32_t* p) const {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  FASTVLM_TARGET_AVX2 void store(float* p, __m256 v) const { _mm256_storeu_ps(p, v); }
};

struct PartVector {
  __m256i mask;  // simd::first_lanes_avx2: the lanes within the row (the others read as zero)
  FASTVLM_TARGET_AVX2 __m256 load(const float* p) const { return _mm256_maskload_ps(p, mask); }
  FASTVLM_TARGET_AVX2 __m256i load(const int32_t* p) const { return _mm256_maskload_epi32(p, mask); }
  FASTVLM_TARGET_AVX2 void store(float* p, __m256 v) const { _mm256_maskstore_ps(p, mask, v); }
};

// step(column, lanes) for each 8-column vector of a row of `cols`, lanes a WholeVector or a PartVector.
template <class Step>
FASTVLM_TARGET_AVX2 inline __attribute__((always_inline)) void for_each_vector_avx2(int64_t cols, Step step) {
  const int64_t full = cols / 8 * 8;
  for (int64_t c = 0; c < full; c += 8) step(c, WholeVector{});
  if (full < cols) step(full, PartVector{simd::first_lanes_avx2(cols - full)});
}

FASTVLM_TARGET_AVX2 inline __m256 abs_avx2(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

FASTVLM_TARGET_AVX2 inline __attribute__((always_inline)) float row_abs_max_avx2(const float* row, int64_t cols) {
  __m256 running[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t c = 0;
  for (; c + 16 <= cols; c += 16)
    for (int k = 0; k < 2; ++k) running[k] = _mm256_max_ps(running[k], abs_avx2(_mm256_loadu_ps(row + c + 8 * k)));
  for_each_vector_avx2(cols - c, [&](int64_t v, auto lanes) FASTVLM_TARGET_AVX2 {
    running[0] = _mm256_max_ps(running[0], abs_avx2(lanes.load(row + c + v)));
  });
  return simd::reduce_max_avx2(_mm256_max_ps(running[0], running[1]));
}

FASTVLM_TARGET_AVX2 inline __attribute__((always_inline)) float quantize_row_avx2(const float* row, int64_t cols,
                                                                                 float abs_max, int8_t* codes) {
  const float scale = abs_max > 0.0f ? abs_max / kMaxCode : 1.0f;
  const float inverse = 1.0f / scale;
  const __m256 inverse8 = _mm256_set1_ps(inverse);
  int64_t c = 0;
  for (; c + 32 <= cols; c += 32) {  // 32 codes per store
    __m256i words[4];
    for (int i = 0; i < 4; ++i) words[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + c + 8 * i), inverse8));
    simd::store_codes_avx2(words, codes + c);
  }
  // The same float product, rounded to nearest even as the vector conversion does.
  for (; c < cols; ++c) codes[c] = int8_t(std::nearbyint(row[c] * inverse));
  return scale;
}

FASTVLM_TARGET_AVX2 void quantize_rows_s8_avx2(const float* x, int64_t rows, int64_t cols, int64_t stride,
                                               int8_t* codes, float* scales) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * stride;
    scales[r] = quantize_row_avx2(row, cols, row_abs_max_avx2(row, cols), codes + r * cols);
  }
}

// acc · scales + bias (bias may be null) for the 8 columns at `column`.
template <class Lanes>
FASTVLM_TARGET_AVX2 inline __m256 dequantize_avx2(const int32_t* acc, __m256 row_scale, const float* weight_scales,
                                                  const float* bias, int64_t column, Lanes lanes) {
  const __m256 scales = _mm256_mul_ps(row_scale, lanes.load(weight_scales + column));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes.load(acc + column)), scales,
                         bias ? lanes.load(bias + column) : _mm256_setzero_ps());
}

FASTVLM_TARGET_AVX2 void dequantize_gelu_quantize_avx2(const int32_t* acc, int64_t rows, int64_t cols,
                                                       int64_t acc_stride, const float* row_scales,
                                                       const float* weight_scales, const float* bias, int8_t* codes,
                                                       float* code_scales) {
  thread_local std::vector<float> staging;
  staging.resize(size_t(cols));
  float* const activated = staging.data();  // read once, as in the AVX-512 variant
  for (int64_t r = 0; r < rows; ++r) {
    const __m256 row_scale = _mm256_set1_ps(row_scales[r]);
    const int32_t* row = acc + r * acc_stride;
    __m256 running = _mm256_setzero_ps();
    for_each_vector_avx2(cols, [&](int64_t c, auto lanes) FASTVLM_TARGET_AVX2 {
      // Lanes past the row read zeros and GELU(0) = 0: the running max is left alone.
      const __m256 result = simd::gelu_coarse_avx2(dequantize_avx2(row, row_scale, weight_scales, bias, c, lanes));
      lanes.store(activated + c, result);
      running = _mm256_max_ps(running, abs_avx2(result));
    });
    code_scales[r] = quantize_row_avx2(activated, cols, simd::reduce_max_avx2(running), codes + r * cols);
  }
}

FASTVLM_TARGET_AVX2 void dequantize_store_avx2(const int32_t* acc, int64_t rows, int64_t cols, int64_t acc_stride,
                                               const float* row_scales, const float* weight_scales,
                                               const float* bias, bool gelu, float* out_f32, uint16_t* out_bf16) {
  if (!out_f32 || out_bf16) throw Error("internal: bfloat16 int8 epilogue output needs AVX512-BF16");
  for (int64_t r = 0; r < rows; ++r) {
    const __m256 row_scale = _mm256_set1_ps(row_scales[r]);
    for_each_vector_avx2(cols, [&](int64_t c, auto lanes) FASTVLM_TARGET_AVX2 {
      __m256 value = dequantize_avx2(acc + r * acc_stride, row_scale, weight_scales, bias, c, lanes);
      if (gelu) value = simd::gelu_avx2(value);
      lanes.store(out_f32 + r * cols + c, value);
    });
  }
}

FASTVLM_TARGET_AVX2 void dequantize_add_avx2(const int32_t* acc, int64_t rows, int64_t cols, int64_t acc_stride,
                                             const float* row_scales, const float* weight_scales, const float* bias,
                                             float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const __m256 row_scale = _mm256_set1_ps(row_scales[r]);
    for_each_vector_avx2(cols, [&](int64_t c, auto lanes) FASTVLM_TARGET_AVX2 {
      float* target = out + r * cols + c;
      const __m256 value = dequantize_avx2(acc + r * acc_stride, row_scale, weight_scales, bias, c, lanes);
      lanes.store(target, _mm256_add_ps(value, lanes.load(target)));
    });
  }
}

// No scalar variants: int8 compute is refused below AVX2 (kernels/capabilities.h).

struct Int8EpilogueOps {
  void (*quantize_rows)(const float*, int64_t, int64_t, int64_t, int8_t*, float*);
  void (*gelu_quantize)(const int32_t*, int64_t, int64_t, int64_t, const float*, const float*, const float*, int8_t*,
                        float*);
  void (*store)(const int32_t*, int64_t, int64_t, int64_t, const float*, const float*, const float*, bool, float*,
                uint16_t*);
  void (*add)(const int32_t*, int64_t, int64_t, int64_t, const float*, const float*, const float*, float*);
};

const Int8EpilogueOps& ops() {
  static const Int8EpilogueOps chosen = kernels::choose<Int8EpilogueOps>({
      .avx2 = {quantize_rows_s8_avx2, dequantize_gelu_quantize_avx2, dequantize_store_avx2, dequantize_add_avx2},
      .avx512 = {quantize_rows_s8_avx512, dequantize_gelu_quantize_avx512, dequantize_store_avx512,
                 dequantize_add_avx512},
  });
  if (!chosen.quantize_rows)
    throw Error("int8 kernels need AVX2, which this CPU (or FASTVLM_ISA=" + kernels::kernel_level_name() +
                ") does not offer");
  return chosen;
}

}  // namespace

void quantize_rows_s8(const float* x, int64_t rows, int64_t cols, int64_t stride, int8_t* codes, float* scales) {
  ops().quantize_rows(x, rows, cols, stride, codes, scales);
}

void dequantize_gelu_quantize(const int32_t* acc, int64_t rows, int64_t cols, int64_t acc_stride,
                              const float* row_scales, const float* weight_scales, const float* bias, int8_t* codes,
                              float* code_scales) {
  ops().gelu_quantize(acc, rows, cols, acc_stride, row_scales, weight_scales, bias, codes, code_scales);
}

void dequantize_store(const int32_t* acc, int64_t rows, int64_t cols, int64_t acc_stride, const float* row_scales,
                      const float* weight_scales, const float* bias, bool gelu, float* out_f32, uint16_t* out_bf16) {
  ops().store(acc, rows, cols, acc_stride, row_scales, weight_scales, bias, gelu, out_f32, out_bf16);
}

void dequantize_add(const int32_t* acc, int64_t rows, int64_t cols, int64_t acc_stride, const float* row_scales,
                    const float* weight_scales, const float* bias, float* out) {
  ops().add(acc, rows, cols, acc_stride, row_scales, weight_scales, bias, out);
}

}  // namespace fastvlm
