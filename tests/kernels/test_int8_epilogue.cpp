// The int8 quantisation and epilogues of the vision tower (kernels/int8_epilogue.h) against scalar
// references written here from the documented arithmetic: per row scale = max|x| / 127 (1 for a zero
// row) and codes = round-half-even(x · (1 / scale)). Column counts cover every remainder of the 16-wide
// (AVX-512) and 8-wide (AVX2) vectors and of the 64- and 32-code stores (1, 7, 9, 15, 16, 17, 31, 33, 63, 64,
// 65, 130) and the tower's widths; each level runs them (KernelLevels' child runs), and below AVX2 the
// kernels must refuse to run.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "kernel_levels.h"
#include "kernels/capabilities.h"
#include "kernels/int8_epilogue.h"

namespace fastvlm {
namespace {

const std::vector<int64_t> kColumns = {1, 7, 9, 15, 16, 17, 31, 33, 63, 64, 65, 130, 384, 1536};

// The documented quantisation of one row, in the same float operations as the contract states.
void reference_quantize(const float* row, int64_t cols, int8_t* codes, float* scale) {
  float abs_max = 0.0f;
  for (int64_t c = 0; c < cols; ++c) abs_max = std::max(abs_max, std::abs(row[c]));
  *scale = abs_max > 0.0f ? abs_max / 127.0f : 1.0f;
  const float inverse = 1.0f / *scale;
  for (int64_t c = 0; c < cols; ++c) codes[c] = int8_t(std::nearbyint(row[c] * inverse));
}

std::vector<float> random_rows(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (float& v : x) v = normal(generator);
  return x;
}

TEST(Int8Epilogue, QuantizeRowsMatchesReferenceExactly) {
  if (!kernels::vision_int8_available()) GTEST_SKIP() << "no AVX2 at " << kernels::kernel_level_name();
  for (const int64_t cols : kColumns) {
    const int64_t rows = 5, stride = cols + 3;
    std::vector<float> x = random_rows(rows, stride, uint32_t(cols));
    std::fill(x.begin() + 2 * stride, x.begin() + 2 * stride + cols, 0.0f);  // an all-zero row: scale 1
    std::vector<int8_t> codes(static_cast<size_t>(rows * cols)), expected_codes(static_cast<size_t>(cols));
    std::vector<float> scales(static_cast<size_t>(rows));
    quantize_rows_s8(x.data(), rows, cols, stride, codes.data(), scales.data());
    for (int64_t r = 0; r < rows; ++r) {
      float expected_scale;
      reference_quantize(x.data() + r * stride, cols, expected_codes.data(), &expected_scale);
      ASSERT_EQ(scales[size_t(r)], expected_scale) << cols << " columns, row " << r;
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(codes[size_t(r * cols + c)], expected_codes[size_t(c)]) << cols << " columns, row " << r << ", column " << c;
    }
  }
}

// Int32 products of a 3-row tile with its row and weight scales and a bias, as the tower's GEMMs hand them
// to an epilogue.
struct EpilogueCase {
  static constexpr int64_t rows = 3;
  int64_t cols;
  std::vector<int32_t> acc;
  std::vector<float> row_scales = {1e-3f, 2e-4f, 5e-5f}, weight_scales, bias;

  EpilogueCase(int64_t columns, uint32_t seed)
      : cols(columns), acc(size_t(rows * columns)), weight_scales(size_t(columns)), bias(size_t(columns)) {
    std::mt19937 generator(seed);
    std::uniform_int_distribution<int32_t> product(-40000, 40000);
    for (int32_t& a : acc) a = product(generator);
    for (int64_t c = 0; c < cols; ++c) {
      weight_scales[size_t(c)] = 0.05f + 0.01f * float(c % 7);
      bias[size_t(c)] = 0.1f * float(c % 5) - 0.2f;
    }
  }
  // acc · row_scale · weight_scale + bias in double: what every epilogue starts from.
  double dequantized(int64_t r, int64_t c) const {
    return double(acc[size_t(r * cols + c)]) * row_scales[size_t(r)] * weight_scales[size_t(c)] + bias[size_t(c)];
  }
};

TEST(Int8Epilogue, GeluRequantizeIsWithinOneStepOfReference) {
  if (!kernels::vision_int8_available()) GTEST_SKIP() << "no AVX2 at " << kernels::kernel_level_name();
  for (const int64_t cols : kColumns) {
    const EpilogueCase t(cols, uint32_t(cols) + 11);
    const int64_t rows = t.rows;
    std::vector<int8_t> codes(static_cast<size_t>(rows * cols)), expected_codes(static_cast<size_t>(cols));
    std::vector<float> scales(static_cast<size_t>(rows)), activated(static_cast<size_t>(cols));
    dequantize_gelu_quantize(t.acc.data(), rows, cols, cols, t.row_scales.data(), t.weight_scales.data(), t.bias.data(),
                             codes.data(), scales.data());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const double value = t.dequantized(r, c);
        activated[size_t(c)] = float(0.5 * value * (1.0 + std::erf(value / std::sqrt(2.0))));
      }
      float expected_scale;
      reference_quantize(activated.data(), cols, expected_codes.data(), &expected_scale);
      // The coarse GELU is within 5e-4 absolute (kernels/simd_gelu.h): the scale moves by that / 127 at
      // most, and a code by one step.
      EXPECT_NEAR(scales[size_t(r)], expected_scale, 1e-3f / 127.0f + 1e-6f * expected_scale) << cols << " columns";
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_LE(std::abs(int(codes[size_t(r * cols + c)]) - int(expected_codes[size_t(c)])), 1)
            << cols << " columns, row " << r << ", column " << c;
    }
  }
}

// The plain and residual-add epilogues write every column of every remainder, and only those: the
// whole vectors run unmasked, the last one masked.
TEST(Int8Epilogue, StoreAndAddMatchReferenceOnEveryRemainder) {
  if (!kernels::vision_int8_available()) GTEST_SKIP() << "no AVX2 at " << kernels::kernel_level_name();
  for (const int64_t cols : kColumns) {
    const EpilogueCase t(cols, uint32_t(cols) + 29);
    const int64_t rows = t.rows;
    // One sentinel past the matrix catches a store beyond the last column.
    const float sentinel = 12345.0f;
    std::vector<float> stored(static_cast<size_t>(rows * cols + 1), sentinel), added(stored.size());
    for (size_t i = 0; i < added.size(); ++i) added[i] = i + 1 < added.size() ? 0.25f * float(i % 9) : sentinel;
    const std::vector<float> before = added;
    dequantize_store(t.acc.data(), rows, cols, cols, t.row_scales.data(), t.weight_scales.data(), t.bias.data(),
                     /*gelu=*/false, stored.data(), nullptr);
    dequantize_add(t.acc.data(), rows, cols, cols, t.row_scales.data(), t.weight_scales.data(), t.bias.data(), added.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const size_t i = size_t(r * cols + c);
        const double value = t.dequantized(r, c);
        ASSERT_NEAR(stored[i], value, 1e-5 * (1.0 + std::abs(value))) << cols << " columns, row " << r << ", column " << c;
        ASSERT_NEAR(added[i], before[i] + value, 1e-5 * (1.0 + std::abs(value)))
            << cols << " columns, row " << r << ", column " << c;
      }
    EXPECT_EQ(stored.back(), sentinel) << cols << " columns";
    EXPECT_EQ(added.back(), sentinel) << cols << " columns";
  }
}

TEST(Int8Epilogue, RefusesBelowAvx2) {
  if (kernels::vision_int8_available()) GTEST_SKIP() << "this level has int8 kernels";
  float x = 1.0f, scale;
  int8_t code;
  EXPECT_THROW(quantize_rows_s8(&x, 1, 1, 1, &code, &scale), Error);
}

TEST(KernelLevels, LowerLevelsPass) { test_support::expect_lower_kernel_levels_pass(); }

}  // namespace
}  // namespace fastvlm
