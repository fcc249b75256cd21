#pragma once
// Dequantisation of Q8_0 / Q4_0 matrices (core/quant.h) to float32 or bfloat16 rows, for the paths that
// multiply dequantised weights (embedding lookups, the bf16 and f32 fallbacks of the quantised linears).
#include <cstdint>

#include "core/quant.h"

namespace fastvlm {

// out[row_count, cols] = the dequantised rows [row_begin, row_begin + row_count), as float or bfloat16.
// Threaded over rows.
void dequantize_rows_f32(const QuantMatrix& matrix, int64_t row_begin, int64_t row_count, float* out);
void dequantize_rows_bf16(const QuantMatrix& matrix, int64_t row_begin, int64_t row_count, uint16_t* out);

// The same rows in the tile order of the AMX prefill GEMM (kernels/quant_bf16_gemm.h): blocks of
// kBf16TileRows rows, each block group by group, a group of one row being one 64-byte tile row, so that
// the tile of rows [16b, 16b + 16) and K [32g, 32g + 32) is the 1 KB at out + (b · groups + g) · 512,
// where groups = cols / 32. A last partial block leaves its missing rows unwritten. Single-threaded (the
// caller threads over panels).
constexpr int64_t kBf16TileRows = 16;
void dequantize_rows_bf16_tiles(const QuantMatrix& matrix, int64_t row_begin, int64_t row_count, uint16_t* out);

}  // namespace fastvlm
