#pragma once
// Block-quantised weight matrices (Q8_0, Q4_0) for the LLM linears, and the activation quantisation
// their integer GEMV uses.
//
// Layout of a quantised [rows, cols] matrix (cols a multiple of kQuantGroupSize = 32): each row is cut
// into groups of 32 consecutive weights; every group g of row r has one scale d = scales[r * cols/32 + g]
// (IEEE half) and 32 integer codes q, and weight = d * q. Codes and scales are two separate arrays, each
// row-major, so both stream sequentially and each maps onto a plain safetensors tensor:
//   Q8_0: codes int8 in [-127, 127], one byte per weight: codes[r * cols + c]          (tensor I8 [rows, cols])
//         d = max|w| / 127 over the group.
//   Q4_0: codes in [-8, 7] stored as q + 8 in a nibble, two weights per byte, 16 bytes per group
//         (tensor U8 [rows, cols/2]): byte j of a group holds weight j in its low nibble and weight j + 16
//         in its high nibble (so one 16-byte load splits into weights 0-15 and 16-31 with a mask and a
//         shift). d = w_m / -8 where w_m is the group's weight of largest magnitude, so that w_m itself
//         is represented exactly and the asymmetric code range is used fully.
//   scales: uint16 IEEE half [rows, cols/32] (tensor F16).
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace fastvlm {

constexpr int kQuantGroupSize = 32;

// Bytes of codes per row of `cols` weights (type Q8_0 or Q4_0, as everywhere below).
int64_t quant_row_bytes(WeightType type, int64_t cols);

// A read-only view of a quantised matrix (typically inside a memory-mapped checkpoint).
struct QuantMatrix {
  WeightType type = WeightType::Q8_0;
  const uint8_t* codes = nullptr;
  const uint16_t* scales = nullptr;
  int64_t rows = 0, cols = 0;

  int64_t groups_per_row() const { return cols / kQuantGroupSize; }
  const uint8_t* row_codes(int64_t row) const { return codes + row * quant_row_bytes(type, cols); }
  const uint16_t* row_scales(int64_t row) const { return scales + row * groups_per_row(); }
};

// One of several products of a shared input (a layer's q/k/v or gate/up projections): y = x · dequant(W)ᵀ
// (+ bias), y [rows, weights->rows]. The prefill GEMMs take a list of them (kernels/qgemm.h,
// kernels/quant_bf16_gemm.h) and prepare x once for all.
struct QuantProduct {
  const QuantMatrix* weights;
  const float* bias;  // or null
  float* y;
};

// Signed code of weight j (0..31) of a group whose codes start at `group`.
inline int quant_code(WeightType type, const uint8_t* group, int j) {
  if (type == WeightType::Q8_0) return int8_t(group[j]);
  constexpr int half = kQuantGroupSize / 2;
  return j < half ? (group[j] & 0xf) - 8 : (group[j - half] >> 4) - 8;
}

// float -> IEEE half, round to nearest even (the other direction is f16_to_f32 in core/dtype.h).
uint16_t f32_to_f16(float value);

// Quantises `rows` x `cols` floats (cols % 32 == 0) into `codes` (quant_row_bytes per row) and `scales`
// (cols/32 per row). Each scale is rounded to half first and the codes computed with the rounded scale.
void quantize_matrix(WeightType type, const float* weights, int64_t rows, int64_t cols, uint8_t* codes,
                     uint16_t* scales);

}  // namespace fastvlm
