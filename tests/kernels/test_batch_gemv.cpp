// gemv_quant_batch (the batched-decode product, kernels/gemv.h) on every kernel level this CPU has, against
// a reference written here from the documented arithmetic: each activation row quantised per 32-group
// (scale max|x| / 127, codes rounded to nearest even), exact integer group products with the weight codes
// of core/quant.h's block layout, scaled by d_w · d_x and summed. Only the float summation order may differ.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/quant.h"
#include "kernel_levels.h"
#include "quantized_weights.h"
#include "kernels/gemv.h"

namespace fastvlm {
namespace {

std::vector<float> random_floats(size_t count, uint32_t seed, float scale) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& v : values) v = normal(generator);
  return values;
}

struct Expected {
  double value = 0, magnitude = 0;  // Σ of the scaled group products and of their absolute values
};

// `m` in the plain layout.
Expected reference(const QuantMatrix& m, int64_t row, const float* x) {
  Expected e;
  const uint8_t* codes = m.codes + row * quant_row_bytes(m.type, m.cols);
  const uint16_t* scales = m.row_scales(row);
  for (int64_t g = 0; g < m.groups_per_row(); ++g) {
    float largest = 0;
    for (int j = 0; j < 32; ++j) largest = std::max(largest, std::fabs(x[g * 32 + j]));
    const float x_scale = largest / 127.0f, inverse = largest == 0 ? 0.0f : 127.0f / largest;
    int64_t dot = 0;
    for (int j = 0; j < 32; ++j) {
      int w;
      if (m.type == WeightType::Q8_0) {
        w = int8_t(codes[g * 32 + j]);
      } else {
        const uint8_t byte = codes[g * 16 + j % 16];
        w = (j < 16 ? (byte & 0xf) : (byte >> 4)) - 8;
      }
      dot += int64_t(w) * int64_t(std::nearbyint(x[g * 32 + j] * inverse));
    }
    const double term = double(f16_to_f32(scales[g])) * double(x_scale) * double(dot);
    e.value += term;
    e.magnitude += std::fabs(term);
  }
  return e;
}

// R = 1..17 (17: a full chunk of 16 and one more), weight rows that are not a multiple of the 16-row tile
// block and are split over the threads, group counts below, at and past a 4-group step, a zero activation row.
TEST(BatchGemv, EveryRowMatchesTheReferenceUpToSummationOrder) {
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{131, 896}, {5, 96}, {40, 160}, {16, 4864}}) {
    const std::vector<float> weights = random_floats(size_t(rows * cols), 3, 0.05f);
    for (const WeightType type : {WeightType::Q8_0, WeightType::Q4_0}) {
      std::vector<uint8_t> codes(size_t(rows * quant_row_bytes(type, cols)));
      std::vector<uint16_t> scales(size_t(rows * cols / 32));
      quantize_matrix(type, weights.data(), rows, cols, codes.data(), scales.data());
      const QuantMatrix matrix{type, codes.data(), scales.data(), rows, cols};
      // The loader's layout (core/quant.h) must give the same numbers.
      const std::vector<uint8_t> blocked_codes_copy = blocked_codes(codes, rows, quant_row_bytes(type, cols));
      const QuantMatrix blocked{type, blocked_codes_copy.data(), scales.data(), rows, cols, kQuantRowBlock};
      for (int64_t x_rows = 1; x_rows <= 17; ++x_rows) {
        SCOPED_TRACE(std::string(isa_name(active_isa())) + " " + std::string(weight_type_name(type)) + ", " +
                     std::to_string(rows) + "x" + std::to_string(cols) + ", x_rows " + std::to_string(x_rows));
        std::vector<float> x = random_floats(size_t(x_rows * cols), uint32_t(20 + x_rows), 2.0f);
        if (x_rows > 2) std::fill(x.begin() + cols, x.begin() + 2 * cols, 0.0f);
        std::vector<float> y(size_t(x_rows * rows), -1.0f);
        gemv_quant_batch(matrix, x.data(), x_rows, y.data());
        std::vector<float> y_blocked(size_t(x_rows * rows), -2.0f);
        gemv_quant_batch(blocked, x.data(), x_rows, y_blocked.data());
        ASSERT_EQ(y_blocked, y);
        for (int64_t i = 0; i < x_rows; ++i) {
          for (int64_t r = 0; r < rows; ++r) {
            const Expected e = reference(matrix, r, x.data() + i * cols);
            ASSERT_NEAR(y[i * rows + r], e.value, 1e-5 * e.magnitude + 1e-30) << "x row " << i << ", row " << r;
          }
        }
      }
    }
  }
}

TEST(KernelLevels, LowerLevelsPass) { test_support::expect_lower_kernel_levels_pass(); }

}  // namespace
}  // namespace fastvlm
