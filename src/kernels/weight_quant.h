#pragma once
// Quantisation of float weights to Q8_0 / Q4_0 (core/quant.h), vectorised: the default precision quantises
// every LLM linear of a bf16 checkpoint as it loads (FastVLM-7B: 6.5 G weights), where core's scalar
// quantize_matrix spends ~1.5 ns a weight. Reads float32, bfloat16 or float16 rows as they are stored, and
// writes the same codes and scales as widening them to float32 and calling quantize_matrix, bit for bit.
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/quant.h"

namespace fastvlm {

// Quantises `rows` x `cols` weights of type `source` (F32, BF16 or F16; cols % 32 == 0) at `weights` into
// `codes` (plain rows, quant_row_bytes each) and `scales` (cols / 32 per row), threaded over rows. A NaN or
// an infinity has no code: returns the index of the first such weight (row-major) and leaves the outputs
// unspecified, or -1 when every weight is finite.
int64_t quantize_weight_rows(WeightType type, DType source, const void* weights, int64_t rows, int64_t cols,
                             uint8_t* codes, uint16_t* scales);

// The same for rows [first_row, first_row + rows) of the tensor that `tensor` names to the user
// ("<file>: tensor '<name>'"), refusing a NaN or an infinity with one error line that says where:
// "<tensor> holds a NaN or an infinity at [row, col]; refusing to quantise it". Such a checkpoint is broken,
// not something to round: the weight has no code and would poison its whole group's scale.
void quantize_finite_weight_rows(const std::string& tensor, int64_t first_row, WeightType type, DType source,
                                 const void* weights, int64_t rows, int64_t cols, uint8_t* codes, uint16_t* scales);

}  // namespace fastvlm
