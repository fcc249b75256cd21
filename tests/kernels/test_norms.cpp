// RMSNorm rows and LayerNorm against their scalar definitions (sums in double precision, one element after
// another), at every kernel level this CPU has (the lower ones in child runs): whole vectors and tails, one
// row (decode) and a prefill's worth (threaded), magnitudes from 1e-20 to 1e20, rows far from zero mean.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernel_levels.h"
#include "kernels/norms.h"

namespace fastvlm {
namespace {

// The definition, written out as the reference decoder computes it.
std::vector<float> reference(const std::vector<float>& x, const std::vector<float>& weight, int64_t rows,
                             int64_t hidden, float eps) {
  std::vector<float> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * hidden;
    double sum_of_squares = 0;
    for (int64_t i = 0; i < hidden; ++i) sum_of_squares += double(row[i]) * row[i];
    const float inverse_rms = float(1.0 / std::sqrt(sum_of_squares / double(hidden) + eps));
    for (int64_t i = 0; i < hidden; ++i) y[size_t(r * hidden + i)] = weight[size_t(i)] * (row[i] * inverse_rms);
  }
  return y;
}

void expect_matches_reference(int64_t rows, int64_t hidden, float magnitude) {
  std::mt19937 rng(uint32_t(rows * 1000 + hidden));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * hidden)), weight(static_cast<size_t>(hidden));
  for (float& v : x) v = normal(rng) * magnitude;
  for (float& w : weight) w = 1.0f + 0.25f * normal(rng);
  const float eps = 1e-6f;
  std::vector<float> y(x.size(), std::numeric_limits<float>::quiet_NaN());
  rms_norm_rows(x.data(), weight.data(), rows, hidden, eps, y.data());
  const std::vector<float> expected = reference(x, weight, rows, hidden, eps);
  for (size_t i = 0; i < y.size(); ++i) {
    // Only the order of the double additions differs: the float scale can move by an ulp, no more.
    ASSERT_NEAR(y[i], expected[i], 2.5e-7f * std::fabs(expected[i]) + 1e-37f)
        << "rows " << rows << ", hidden " << hidden << ", magnitude " << magnitude << ", element " << i;
  }
}

TEST(RmsNorm, MatchesTheDefinition) {
  for (const int64_t hidden : {896, 1536, 64, 40, 13, 1})
    for (const int64_t rows : {1, 3, 300})
      for (const float magnitude : {1.0f, 1e-20f, 1e20f, 3e3f}) expect_matches_reference(rows, hidden, magnitude);
}

TEST(RmsNorm, ZeroRowsGiveZerosAndNaNsStay) {
  const int64_t hidden = 37;
  std::vector<float> x(size_t(2 * hidden), 0.0f), weight(size_t(hidden), 2.0f), y(x.size(), 1.0f);
  x[size_t(hidden + 5)] = std::numeric_limits<float>::quiet_NaN();
  rms_norm_rows(x.data(), weight.data(), 2, hidden, 1e-6f, y.data());
  for (int64_t i = 0; i < hidden; ++i) EXPECT_EQ(y[size_t(i)], 0.0f) << i;                 // 0 · 1/sqrt(eps)
  for (int64_t i = hidden; i < 2 * hidden; ++i) EXPECT_TRUE(std::isnan(y[size_t(i)])) << i;  // a NaN spoils its row
}

// LayerNormChannel as the vision tower's reference computed it.
std::vector<float> layer_norm_reference(const std::vector<float>& x, const std::vector<float>& weight,
                                        const std::vector<float>& bias, float eps) {
  const int64_t n = int64_t(x.size());
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[size_t(i)];
  const double mean = sum / double(n);
  double squares = 0;
  for (int64_t i = 0; i < n; ++i) squares += (x[size_t(i)] - mean) * (x[size_t(i)] - mean);
  const float inv_std = float(1.0 / std::sqrt(squares / double(n) + eps));
  std::vector<float> y(x.size());
  for (int64_t i = 0; i < n; ++i)
    y[size_t(i)] = weight[size_t(i)] * ((x[size_t(i)] - float(mean)) * inv_std) + bias[size_t(i)];
  return y;
}

TEST(LayerNorm, MatchesTheDefinition) {
  for (const int64_t n : {1536, 768, 64, 40, 13, 2})
    for (const float magnitude : {1.0f, 1e-20f, 1e20f, 3e3f})
      for (const float offset : {0.0f, 5.0f}) {  // a mean far from zero: the deviations are what counts
        std::mt19937 rng(static_cast<uint32_t>(n));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        std::vector<float> x(static_cast<size_t>(n)), weight(x.size()), bias(x.size());
        for (float& v : x) v = (offset + normal(rng)) * magnitude;
        for (float& w : weight) w = 1.0f + 0.25f * normal(rng);
        for (float& b : bias) b = 0.1f * normal(rng);
        const float eps = 1e-5f;
        std::vector<float> y(x.size(), std::numeric_limits<float>::quiet_NaN());
        layer_norm_row(x.data(), weight.data(), bias.data(), n, eps, y.data());
        const std::vector<float> expected = layer_norm_reference(x, weight, bias, eps);
        for (size_t i = 0; i < y.size(); ++i)
          ASSERT_NEAR(y[i], expected[i], 1e-6f * (std::fabs(expected[i]) + 1.0f))
              << "n " << n << ", magnitude " << magnitude << ", offset " << offset << ", element " << i;
      }
}

TEST(KernelLevels, LowerLevelsPass) { test_support::expect_lower_kernel_levels_pass(); }

}  // namespace
}  // namespace fastvlm
