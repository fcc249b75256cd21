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

}  // namespace fastvlm
