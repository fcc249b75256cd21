#include "core/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace fastvlm {

void block_rows_in_place(uint8_t* codes, int64_t rows, int64_t row_bytes, int64_t row_block) {
  if (row_block == 1) return;  // the plain layout already
  // Blocks are independent: threaded, as the quantisation before it (a 7B load rearranges 7 GB of codes).
#pragma omp parallel
  {
    std::vector<uint8_t> block(size_t(row_block * row_bytes));
#pragma omp for schedule(static)
    for (int64_t first = 0; first < rows; first += row_block) {
      const int64_t count = std::min(row_block, rows - first);
      std::memcpy(block.data(), codes + first * row_bytes, size_t(count * row_bytes));
      for (int64_t r = 0; r < count; ++r) {
        const RowCodes row = block_row(codes, rows, row_bytes, row_block, first + r);
        for (int64_t byte = 0; byte < row_bytes; byte += kQuantChunkBytes)
          std::memcpy(codes + (row.at(byte) - codes), block.data() + r * row_bytes + byte,
                      size_t(std::min(kQuantChunkBytes, row_bytes - byte)));
      }
    }
  }
}

uint16_t f32_to_f16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return uint16_t(sign | 0x7e00u);   // NaN
  if (magnitude >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds past 65504: infinity
  if (magnitude < 0x38800000u) {
    // Subnormal half (or zero): scale into the 10-bit fraction and let the FPU round to nearest even.
    float absolute;
    std::memcpy(&absolute, &magnitude, sizeof absolute);
    return uint16_t(sign | uint32_t(std::nearbyint(absolute * 16777216.0f)));  // 2^24 = 1 / smallest subnormal
  }
  // Normal: rebias the exponent (127 -> 15) and round the 23-bit fraction to 10 bits, ties to even; a
  // carry out of the fraction correctly bumps the exponent.
  const uint32_t rebased = magnitude - 0x38000000u;
  const uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
  return uint16_t(sign | (rounded >> 13));
}

namespace {

void quantize_group(WeightType type, const float* w, uint8_t* codes, uint16_t* scale) {
  if (type == WeightType::Q8_0) {
    float largest = 0;
    for (int i = 0; i < kQuantGroupSize; ++i) largest = std::max(largest, std::fabs(w[i]));
    *scale = f32_to_f16(largest / 127.0f);
    const float d = f16_to_f32(*scale);
    const float inverse = d == 0 ? 0.0f : 1.0f / d;
    for (int i = 0; i < kQuantGroupSize; ++i) {
      const float q = std::clamp(std::nearbyint(w[i] * inverse), -127.0f, 127.0f);
      codes[i] = uint8_t(int8_t(q));
    }
    return;
  }
  float extreme = 0;  // the signed weight of largest magnitude
  for (int i = 0; i < kQuantGroupSize; ++i)
    if (std::fabs(w[i]) > std::fabs(extreme)) extreme = w[i];
  *scale = f32_to_f16(extreme / -8.0f);
  const float d = f16_to_f32(*scale);
  const float inverse = d == 0 ? 0.0f : 1.0f / d;
  auto code = [&](float x) { return uint8_t(std::clamp(std::nearbyint(x * inverse), -8.0f, 7.0f) + 8.0f); };
  const int half = kQuantGroupSize / 2;
  for (int j = 0; j < half; ++j) codes[j] = uint8_t(code(w[j]) | (code(w[j + half]) << 4));
}

}  // namespace

void quantize_matrix_row(WeightType type, const float* weights, int64_t cols, uint8_t* codes, uint16_t* scales) {
  const int64_t group_bytes = quant_row_bytes(type, kQuantGroupSize);
  for (int64_t g = 0; g < cols / kQuantGroupSize; ++g)
    quantize_group(type, weights + g * kQuantGroupSize, codes + g * group_bytes, scales + g);
}

void quantize_matrix(WeightType type, const float* weights, int64_t rows, int64_t cols, uint8_t* codes,
                     uint16_t* scales) {
  if (cols % kQuantGroupSize != 0)
    throw Error("quantize: " + std::to_string(cols) + " columns is not a multiple of the group size 32");
  const int64_t groups = cols / kQuantGroupSize;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    quantize_matrix_row(type, weights + r * cols, cols, codes + r * quant_row_bytes(type, cols), scales + r * groups);
}

}  // namespace fastvlm
