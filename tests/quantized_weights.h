#pragma once
// A random Q8_0 / Q4_0 weight matrix for kernel tests, with its values dequantised here from the documented
// block layout (core/quant.h) rather than by the library, so that a test's reference is independent of the
// code under test.
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"

namespace fastvlm {

struct QuantizedWeights {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
  std::vector<double> dequantised;  // [rows, cols]
  QuantMatrix view;
  std::vector<uint8_t> blocked;  // the codes in the loader's layout (blocked_codes below)
  QuantMatrix blocked_view;
};

// `codes` (plain row-major, `rows` rows of `row_bytes`) rearranged as core/quant.h documents the in-memory
// layout, written out here from that description: blocks of 4 rows taking turns, 64 bytes each (a row's
// shorter last chunk likewise), the last block with the rows left.
inline std::vector<uint8_t> blocked_codes(const std::vector<uint8_t>& codes, int64_t rows, int64_t row_bytes) {
  std::vector<uint8_t> out;
  for (int64_t first = 0; first < rows; first += 4) {
    const int64_t block_rows = std::min<int64_t>(4, rows - first);
    for (int64_t chunk = 0; chunk < row_bytes; chunk += 64)
      for (int64_t r = first; r < first + block_rows; ++r)
        for (int64_t b = chunk; b < std::min<int64_t>(chunk + 64, row_bytes); ++b) out.push_back(codes[size_t(r * row_bytes + b)]);
  }
  return out;
}

inline QuantizedWeights make_quantized_weights(WeightType type, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> values(size_t(rows * cols));
  for (float& v : values) v = normal(generator);
  QuantizedWeights w;
  const int64_t row_bytes = type == WeightType::Q8_0 ? cols : cols / 2;
  w.codes.resize(size_t(rows * row_bytes));
  w.scales.resize(size_t(rows * cols / 32));
  quantize_matrix(type, values.data(), rows, cols, w.codes.data(), w.scales.data());
  w.dequantised.resize(values.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t g = c / 32, j = c % 32;
      int code;
      if (type == WeightType::Q8_0) {
        code = int8_t(w.codes[size_t(r * row_bytes + c)]);
      } else {
        const uint8_t byte = w.codes[size_t(r * row_bytes + g * 16 + j % 16)];
        code = (j < 16 ? (byte & 0xf) : (byte >> 4)) - 8;
      }
      w.dequantised[size_t(r * cols + c)] = double(f16_to_f32(w.scales[size_t(r * cols / 32 + g)])) * code;
    }
  }
  w.view = QuantMatrix{type, w.codes.data(), w.scales.data(), rows, cols};
  w.blocked = blocked_codes(w.codes, rows, row_bytes);
  w.blocked_view = QuantMatrix{type, w.blocked.data(), w.scales.data(), rows, cols, kQuantRowBlock};
  return w;
}

}  // namespace fastvlm
