#pragma once
// Symmetric int8 quantisation for the vision tower's Int8 compute, one scale per row: weights per output
// channel at load, activations per pixel at run time (each pixel's own max |x|, so that one bright pixel
// does not coarsen its neighbours). The kernels exist for AVX-512 and AVX2 and throw fastvlm::Error below
// (vision_int8_available(), kernels/capabilities.h); bfloat16 output needs AVX-512.
#include <cstdint>

namespace fastvlm {

// codes[r, c] = round(x[r, c] / scales[r]) with scales[r] = max|row r| / 127 (1 for an all-zero row, so
// that every scale is usable as a divisor). Rows of `x` are `stride` apart; codes are contiguous.
void quantize_rows_s8(const float* x, int64_t rows, int64_t cols, int64_t stride, int8_t* codes, float* scales);

// Epilogues of an int8 product acc = codes · weight_codesᵀ ([rows, cols] int32, rows `acc_stride` apart:
// the AMX product's blocks have padded rows), whose real value is acc[r, c] · row_scales[r] ·
// weight_scales[c]; bias may be null.
//
// The next product's input, in one pass per row while it is in cache:
// (codes, code_scales)[r, :] = quantize_rows_s8(gelu(acc[r, :] · row_scales[r] · weight_scales + bias)).
void dequantize_gelu_quantize(const int32_t* acc, int64_t rows, int64_t cols, int64_t acc_stride,
                              const float* row_scales, const float* weight_scales, const float* bias, int8_t* codes,
                              float* code_scales);
// out[r, c] = act(acc[r, c] · row_scales[r] · weight_scales[c] + bias[c]), act GELU when `gelu`, else
// identity, into float32 `out_f32` or (when that is null) bfloat16 bits `out_bf16`, contiguous.
void dequantize_store(const int32_t* acc, int64_t rows, int64_t cols, int64_t acc_stride, const float* row_scales,
                      const float* weight_scales, const float* bias, bool gelu, float* out_f32, uint16_t* out_bf16);
// A residual add: out[r, c] += acc[r, c] · row_scales[r] · weight_scales[c] + bias[c] (out contiguous).
void dequantize_add(const int32_t* acc, int64_t rows, int64_t cols, int64_t acc_stride, const float* row_scales,
                    const float* weight_scales, const float* bias, float* out);

}  // namespace fastvlm
