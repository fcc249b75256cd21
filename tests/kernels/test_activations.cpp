// GELU against the erf definition computed in double precision, over the range the tower's activations
// take and beyond (large magnitudes saturate to 0 and x), and the batched softmax rows (plain and rounded
// to bfloat16), at every kernel level this CPU has (the lower ones in child runs).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/error.h"
#include "kernel_levels.h"
#include "kernels/activations.h"
#include "kernels/softmax.h"

namespace fastvlm {
namespace {

TEST(Activations, GeluMatchesErfDefinition) {
  std::vector<float> x;
  for (int i = -40000; i <= 40000; ++i) x.push_back(float(i) * 2.5e-4f);  // [-10, 10] in steps of 1/4000
  for (float big : {-1e30f, -1e4f, -40.0f, 40.0f, 1e4f, 1e30f}) x.push_back(big);
  x.push_back(0.0f);
  std::vector<float> y = x;
  gelu_simd(y.data(), int64_t(y.size()));  // odd length: the vector tail is covered too
  for (size_t i = 0; i < x.size(); ++i) {
    const double expected = 0.5 * double(x[i]) * (1.0 + std::erf(double(x[i]) / std::sqrt(2.0)));
    // A&S 7.1.28 bounds erf's error by 3e-7; float rounding adds a few ulps of x.
    EXPECT_NEAR(y[i], expected, 1e-6 + 4e-7 * std::fabs(expected)) << "x = " << x[i];
  }
  float nan = std::nanf("");
  gelu_simd(&nan, 1);
  EXPECT_TRUE(std::isnan(nan));
}

TEST(Softmax, RowsMatchDoublePrecision) {
  // 37 columns: a partial vector at every level; 3 rows so that each row's offset is exercised.
  const int64_t rows = 3, cols = 37;
  std::vector<float> x(size_t(rows * cols));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float((i * 2654435761u) % 1000) / 100.0f - 5.0f;
  std::vector<double> expected(x.begin(), x.end());
  for (int64_t r = 0; r < rows; ++r) {
    double* row = expected.data() + r * cols;
    const double largest = *std::max_element(row, row + cols);
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += (row[c] = std::exp(row[c] - largest));
    for (int64_t c = 0; c < cols; ++c) row[c] /= sum;
  }
  std::vector<float> scratch = x;
  softmax_rows(scratch.data(), rows, cols);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(scratch[i], expected[i], 1e-6 * expected[i] + 1e-12) << i;

  std::vector<uint16_t> rounded(x.size());
  scratch = x;
  if (active_isa() < Isa::Avx512) {
    EXPECT_THROW(softmax_rows(scratch.data(), rows, cols, rounded.data()), Error);
    return;
  }
  softmax_rows(scratch.data(), rows, cols, rounded.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(bf16_to_f32(rounded[i]), expected[i], 4e-3 * expected[i]) << i;
}

TEST(KernelLevels, LowerLevelsPass) { test_support::expect_lower_kernel_levels_pass(); }

}  // namespace
}  // namespace fastvlm
