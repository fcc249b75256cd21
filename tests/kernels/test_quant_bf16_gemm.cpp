// The AMX prefill GEMM on Q8_0 / Q4_0 weights (kernels/quant_bf16_gemm.h) against a double-precision
// product of the dequantised weights, decoded here from the documented block layout (core/quant.h).
// The kernel rounds x and dequant(W) to bfloat16 (each at most 2^-9 relative) and accumulates products in
// float32, so every result must lie within Σ|x·w| · (2^-8 + 2^-17 + (K + 2) · 2^-24) of the exact value
// (a lost group, a wrong column or a missing bias is off by far more: a whole term of that sum).
// Shapes cover activation rows and output columns that are not multiples of the 16/32-row tiles, odd
// output counts, K from one group up to Qwen2-0.5B's MLP, with and without bias. Below the amx level the
// kernel must refuse to run (checked in the child processes of KernelLevels).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/quant.h"
#include "kernel_levels.h"
#include "quantized_weights.h"
#include "kernels/capabilities.h"
#include "kernels/quant_bf16_gemm.h"

namespace fastvlm {
namespace {

struct Shape {
  int64_t rows, out_features, in_features;
  bool with_bias;
};

class QuantBf16Gemm : public ::testing::TestWithParam<WeightType> {
 protected:
  void SetUp() override {
    if (!kernels::amx_bf16_available())
      GTEST_SKIP() << "no AMX-BF16 at the active ISA level (" << kernels::kernel_level_name()
                   << "): the AMX prefill route is not taken here";
  }
};

const std::vector<Shape> kShapes = {
    {1, 1, 32, false},     {17, 33, 64, true},      {31, 47, 96, false},    {45, 129, 160, true},
    {33, 65, 4864, false}, {280, 131, 896, true},   {64, 896, 896, false},  {3, 16, 32, true},
    {5, 160, 64, true},    {5, 64, 160, false},     {5, 151936, 64, false},
};

TEST_P(QuantBf16Gemm, MatchesTheDequantisedProductWithinBfloat16Rounding) {
  const WeightType type = GetParam();
  for (const Shape& shape : kShapes) {
    SCOPED_TRACE(testing::Message() << shape.rows << "x" << shape.out_features << "x" << shape.in_features);
    const int64_t K = shape.in_features, N = shape.out_features;
    const QuantizedWeights w = make_quantized_weights(type, N, K, 31);
    std::mt19937 generator(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    // A few outlier channels, as in real LLM activations.
    std::vector<float> x(size_t(shape.rows * K));
    for (size_t i = 0; i < x.size(); ++i) x[i] = normal(generator) * (i % K % 97 == 5 ? 30.0f : 1.0f);
    std::vector<float> bias;
    if (shape.with_bias)
      for (int64_t n = 0; n < N; ++n) bias.push_back(0.01f * float(int(n % 17) - 8));
    constexpr float kGuard = -12345.0f;
    const size_t count = size_t(shape.rows * N);
    std::vector<float> y(count + 64, kGuard);
    linear_quant_bf16(x.data(), shape.rows, w.view, bias.empty() ? nullptr : bias.data(), y.data());
    for (size_t i = count; i < y.size(); ++i) ASSERT_EQ(y[i], kGuard) << "written past the output at " << i;
    // The loader's block layout (core/quant.h) expands to the same panels.
    std::vector<float> y_blocked(count + 64, kGuard);
    linear_quant_bf16(x.data(), shape.rows, w.blocked_view, bias.empty() ? nullptr : bias.data(), y_blocked.data());
    ASSERT_EQ(y_blocked, y);
    const double relative = std::ldexp(1.0, -8) + std::ldexp(1.0, -17) + double(K + 2) * std::ldexp(1.0, -24);
    for (int64_t r = 0; r < shape.rows; ++r) {
      for (int64_t n = 0; n < N; ++n) {
        const double b = bias.empty() ? 0.0 : bias[size_t(n)];
        double exact = b, magnitude = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double term = w.dequantised[size_t(n * K + k)] * x[size_t(r * K + k)];
          exact += term;
          magnitude += std::fabs(term);
        }
        const double bound = relative * magnitude + std::ldexp(std::fabs(b), -23);
        const float got = y[size_t(r * N + n)];
        ASSERT_NEAR(got, exact, bound) << "row " << r << ", column " << n;
      }
    }
  }
}

// Several weights on one input (q/k/v, gate/up) convert and pack x once: each result must be bit for bit
// the single product's, which the test above checks against the dequantised reference; a product that
// read another's weights, bias or output would differ in whole terms.
TEST_P(QuantBf16Gemm, SharedInputGivesEachSingleProduct) {
  const WeightType type = GetParam();
  constexpr int64_t kRows = 45, K = 160;
  const std::vector<int64_t> outputs = {131, 32, 7};
  std::vector<QuantizedWeights> weights;
  std::vector<std::vector<float>> biases, shared, single;
  for (size_t i = 0; i < outputs.size(); ++i) {
    weights.push_back(make_quantized_weights(type, outputs[i], K, 40 + int(i)));
    biases.emplace_back();
    if (i != 1)
      for (int64_t n = 0; n < outputs[i]; ++n) biases.back().push_back(0.03f * float(int(n % 11) - 5) + float(i));
    shared.emplace_back(size_t(kRows * outputs[i]), 0.0f);
    single.emplace_back(size_t(kRows * outputs[i]), 0.0f);
  }
  std::mt19937 generator(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(size_t(kRows * K));
  for (float& value : x) value = normal(generator);
  std::vector<QuantProduct> products;
  for (size_t i = 0; i < outputs.size(); ++i)
    products.push_back({&weights[i].view, biases[i].empty() ? nullptr : biases[i].data(), shared[i].data()});
  linear_quant_bf16(x.data(), kRows, products);
  for (size_t i = 0; i < outputs.size(); ++i) {
    linear_quant_bf16(x.data(), kRows, weights[i].view, biases[i].empty() ? nullptr : biases[i].data(),
                      single[i].data());
    for (size_t j = 0; j < single[i].size(); ++j)
      ASSERT_EQ(shared[i][j], single[i][j]) << "product " << i << ", element " << j;
  }
}

// Below amx (in the child runs of KernelLevels) the route is reported unavailable and the kernel refuses
// to run, so that Linear keeps the int8 / float routes.
TEST(QuantBf16GemmDispatch, UnavailableAndRefusedBelowAmx) {
  if (active_isa() >= Isa::Amx) GTEST_SKIP() << "checked in the runs capped below amx";
  EXPECT_FALSE(kernels::amx_bf16_available());
  const QuantizedWeights w = make_quantized_weights(WeightType::Q8_0, 16, 32, 1);
  std::vector<float> x(32, 1.0f), y(16);
  EXPECT_THROW(linear_quant_bf16(x.data(), 1, w.view, nullptr, y.data()), Error);
}

TEST(KernelLevels, LowerLevelsPass) { test_support::expect_lower_kernel_levels_pass(); }

INSTANTIATE_TEST_SUITE_P(Formats, QuantBf16Gemm, ::testing::Values(WeightType::Q8_0, WeightType::Q4_0),
                         [](const testing::TestParamInfo<WeightType>& info) {
                           return std::string(weight_type_name(info.param));
                         });

}  // namespace
}  // namespace fastvlm
