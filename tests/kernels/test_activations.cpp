// GELU against the erf definition computed in double precision, over the range the tower's activations
// take and beyond (large magnitudes saturate to 0 and x), and the batched softmax rows (normalised, and the
// bfloat16 numerators with their sums), at every kernel level this CPU has (the lower ones in child runs).
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

// exp(x - row max) of each row in double precision, and each row's sum of them.
struct SoftmaxReference {
  std::vector<double> exps, sums;
};
SoftmaxReference softmax_reference(const std::vector<float>& x, int64_t rows, int64_t cols) {
  SoftmaxReference reference{std::vector<double>(x.begin(), x.end()), std::vector<double>(size_t(rows), 0.0)};
  for (int64_t r = 0; r < rows; ++r) {
    double* row = reference.exps.data() + r * cols;
    const double largest = *std::max_element(row, row + cols);
    for (int64_t c = 0; c < cols; ++c) reference.sums[size_t(r)] += (row[c] = std::exp(row[c] - largest));
  }
  return reference;
}

// Rows of 37 (a partial vector at every level) and 133 columns (whole groups of 64 and 32 of the AVX-512
// passes, then a tail); 3 rows so that each row's offset is exercised; scores over [-45, 45], so that
// some exps are far below the row's largest.
std::vector<float> softmax_input(int64_t rows, int64_t cols) {
  std::vector<float> x(size_t(rows * cols));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float((i * 2654435761u) % 1000) / 11.0f - 45.0f;
  return x;
}

TEST(Softmax, RowsMatchDoublePrecision) {
  const int64_t rows = 3;
  for (int64_t cols : {37, 133}) {
    const std::vector<float> x = softmax_input(rows, cols);
    const SoftmaxReference reference = softmax_reference(x, rows, cols);
    std::vector<float> probabilities = x;
    softmax_rows(probabilities.data(), rows, cols);
    for (size_t i = 0; i < x.size(); ++i) {
      const double expected = reference.exps[i] / reference.sums[i / size_t(cols)];
      EXPECT_NEAR(probabilities[i], expected, 1e-6 * expected + 1e-12) << cols << " columns, " << i;
    }
  }
}

TEST(Softmax, NumeratorsAndSumsMatchDoublePrecision) {
  const int64_t rows = 3;
  for (int64_t cols : {37, 133}) {
    const std::vector<float> x = softmax_input(rows, cols);
    const SoftmaxReference reference = softmax_reference(x, rows, cols);
    std::vector<uint16_t> numerators(x.size());
    std::vector<float> sums(static_cast<size_t>(rows));
    if (active_isa() < Isa::Avx512) {
      EXPECT_THROW(softmax_numerators_bf16(x.data(), rows, cols, numerators.data(), sums.data()), Error);
      return;
    }
    softmax_numerators_bf16(x.data(), rows, cols, numerators.data(), sums.data());
    for (int64_t r = 0; r < rows; ++r)
      EXPECT_NEAR(sums[size_t(r)], reference.sums[size_t(r)], 1e-4 * reference.sums[size_t(r)]) << cols << " columns";
    // bfloat16 rounding (up to 2^-8 relative) and the coarse exp (5e-5); exps below float's normal range
    // (1.2e-38) may flush to 0.
    for (size_t i = 0; i < x.size(); ++i)
      EXPECT_NEAR(bf16_to_f32(numerators[i]), reference.exps[i], 4e-3 * reference.exps[i] + 1.2e-38)
          << cols << " columns, " << i;
  }
}

TEST(KernelLevels, LowerLevelsPass) { test_support::expect_lower_kernel_levels_pass(); }

}  // namespace
}  // namespace fastvlm
