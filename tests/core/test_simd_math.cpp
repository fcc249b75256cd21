// The vectorised GELU against the erf definition computed in double precision, over the range the
// tower's activations take and beyond (large magnitudes saturate to 0 and x).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/simd_math.h"

namespace fastvlm {
namespace {

TEST(SimdMath, GeluMatchesErfDefinition) {
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

}  // namespace
}  // namespace fastvlm
