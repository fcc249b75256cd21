#pragma once
// Symmetric int8 quantisation for the vision tower's Int8 compute: weights per output channel at load,
// activations per GEMM tile at run time (dynamic scale from the tile's own max|x|).
#include <cstdint>


namespace fastvlm {

// codes[r, c] = round(weights[r, c] / scales[r]) with scales[r] = max|row r| / 127 (1 for an all-zero row,
// so that every scale is usable as a divisor).
void quantize_rows_s8(const float* weights, int64_t rows, int64_t cols, int8_t* codes, float* scales);

// Quantises the rows x cols block at `src` (row stride src_stride) into `dst` (contiguous, cols per row)
// with one scale for the whole block, max|x| / 127 (1 for an all-zero block), and returns that scale.
// Uses AVX-512; the caller checks that the CPU has it.
float quantize_block_s8(const float* src, int64_t rows, int64_t cols, int64_t src_stride, int8_t* dst);

// Epilogues of an int8 product acc = codes · weight_codesᵀ ([rows, cols] int32, contiguous), where
// scales[c] = input scale x weight scale of output c and bias may be null:
// out[r, c] = gelu(acc[r, c] · scales[c] + bias[c]) (out contiguous); returns max |out| over the block,
// ready for quantize-by-scale of the next product.
float dequantize_gelu(const int32_t* acc, int64_t rows, int64_t cols, const float* scales, const float* bias,
                      float* out);
// out[r, c] += acc[r, c] · scales[c] + bias[c] (a residual add; out contiguous).
void dequantize_add(const int32_t* acc, int64_t rows, int64_t cols, const float* scales, const float* bias,
                    float* out);
// quantize_block_s8 for a block whose max |x| is already known.
float quantize_block_s8_with_max(const float* src, int64_t rows, int64_t cols, int64_t src_stride, float abs_max,
                                 int8_t* dst);

}  // namespace fastvlm
