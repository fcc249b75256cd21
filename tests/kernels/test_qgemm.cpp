// The integer prefill GEMM on Q8_0 / Q4_0 weights (kernels/qgemm.h) against double-precision references
// written here from the documented block layout (core/quant.h) and activation quantisation (kernels/qgemm.h):
//  - activations that quantise exactly must give dequant(W)·x up to float rounding;
//  - random activations (with outlier channels) must give the documented integer arithmetic up to float
//    rounding, and stay within the activation-rounding bound of dequant(W)·x with the unquantised x.
// Shapes cover odd row counts (every micro-tile remainder), N not a multiple of 8, 16 or 32, with and without
// bias, up to Qwen2-0.5B sizes. The kernel runs at the avx2 and avx512 levels (the lower ones in child
// processes, tests/kernel_levels.h); at the scalar level it must refuse to run.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
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
#include "kernels/qgemm.h"

namespace fastvlm {
namespace {

struct Shape {
  int64_t rows, out_features, in_features;
  bool with_bias;
};

std::vector<float> make_bias(const Shape& shape) {
  if (!shape.with_bias) return {};
  std::vector<float> bias(size_t(shape.out_features));
  for (size_t i = 0; i < bias.size(); ++i) bias[i] = 0.01f * float(int(i % 17) - 8);
  return bias;
}

// The documented activation quantisation: per group of 32, d = max|x| / 127 and
// code = round_to_nearest_even(x · (127 / max|x|)) in float; returns code · d per element, in double.
std::vector<double> quantised_activations(const std::vector<float>& x) {
  std::vector<double> out(x.size());
  for (size_t start = 0; start < x.size(); start += 32) {
    float largest = 0;
    for (size_t i = start; i < start + 32; ++i) largest = std::max(largest, std::fabs(x[i]));
    const float inverse = largest == 0 ? 0.0f : 127.0f / largest;
    const double scale = double(largest / 127.0f);
    for (size_t i = start; i < start + 32; ++i) out[i] = std::nearbyint(x[i] * inverse) * scale;
  }
  return out;
}

// Runs linear_quant with guard values after y, checks they are untouched, and returns y.
std::vector<float> run(const Shape& shape, const std::vector<float>& x, const QuantizedWeights& w,
                       const std::vector<float>& bias) {
  constexpr float kGuard = -12345.0f;
  const size_t count = size_t(shape.rows * shape.out_features);
  std::vector<float> y(count + 64, kGuard);
  linear_quant(x.data(), shape.rows, w.view, bias.empty() ? nullptr : bias.data(), y.data());
  for (size_t i = count; i < y.size(); ++i) EXPECT_EQ(y[i], kGuard) << "written past the output at " << i;
  y.resize(count);
  return y;
}

class QuantGemm : public ::testing::TestWithParam<WeightType> {
 protected:
  void SetUp() override {
    if (!kernels::quant_int8_gemm_available()) GTEST_SKIP() << "no int8 GEMM at " << kernels::kernel_level_name();
  }
};

const std::vector<Shape> kShapes = {
    {1, 16, 32, false},   {5, 50, 96, true},      {7, 33, 64, false},     {13, 128, 896, true},
    {6, 17, 160, true},   {61, 160, 4864, false}, {280, 128, 896, true},  {11, 896, 896, false},
};

// Each group of x is code · 2^e with integer codes in [-127, 127] and one code ±127: the quantisation
// recovers the codes and scale exactly, so only float rounding separates y from dequant(W)·x.
TEST_P(QuantGemm, ExactlyQuantisableActivationsGiveTheDequantisedProduct) {
  const WeightType type = GetParam();
  for (const Shape& shape : kShapes) {
    SCOPED_TRACE(testing::Message() << shape.rows << "x" << shape.out_features << "x" << shape.in_features);
    const QuantizedWeights w = make_quantized_weights(type, shape.out_features, shape.in_features, 11);
    std::mt19937 generator(7);
    std::uniform_int_distribution<int> code(-127, 127), exponent(-8, 3), position(0, 31);
    std::vector<float> x(size_t(shape.rows * shape.in_features));
    for (size_t start = 0; start < x.size(); start += 32) {
      const float scale = std::ldexp(1.0f, exponent(generator));
      for (size_t i = start; i < start + 32; ++i) x[i] = float(code(generator)) * scale;
      x[start + position(generator)] = (code(generator) < 0 ? -127.0f : 127.0f) * scale;
    }
    const std::vector<float> bias = make_bias(shape);
    const std::vector<float> y = run(shape, x, w, bias);
    const int64_t K = shape.in_features;
    // Float error: per group a product of exact integers rounded twice, then K/32 additions.
    const double relative = double(K / 32 + 3) * std::ldexp(1.0, -24);
    for (int64_t r = 0; r < shape.rows; ++r) {
      for (int64_t n = 0; n < shape.out_features; ++n) {
        double expected = bias.empty() ? 0.0 : bias[size_t(n)], magnitude = std::fabs(expected);
        for (int64_t k = 0; k < K; ++k) {
          const double term = w.dequantised[size_t(n * K + k)] * x[size_t(r * K + k)];
          expected += term;
          magnitude += std::fabs(term);
        }
        ASSERT_NEAR(y[size_t(r * shape.out_features + n)], expected, relative * magnitude + 1e-30)
            << "row " << r << ", column " << n;
      }
    }
  }
}

// Normal activations with a few outlier channels (as in real LLM activations).
TEST_P(QuantGemm, RandomActivationsFollowTheIntegerArithmeticAndItsErrorBound) {
  const WeightType type = GetParam();
  for (const Shape& shape : kShapes) {
    SCOPED_TRACE(testing::Message() << shape.rows << "x" << shape.out_features << "x" << shape.in_features);
    const QuantizedWeights w = make_quantized_weights(type, shape.out_features, shape.in_features, 21);
    const int64_t K = shape.in_features;
    std::mt19937 generator(9);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(size_t(shape.rows * K));
    for (size_t i = 0; i < x.size(); ++i) x[i] = normal(generator) * (i % K % 97 == 5 ? 30.0f : 1.0f);
    const std::vector<double> x_quantised = quantised_activations(x);
    const std::vector<float> bias = make_bias(shape);
    const std::vector<float> y = run(shape, x, w, bias);
    const double relative = double(K / 32 + 3) * std::ldexp(1.0, -24);
    double worst_fraction_of_bound = 0;
    for (int64_t r = 0; r < shape.rows; ++r) {
      for (int64_t n = 0; n < shape.out_features; ++n) {
        const double b = bias.empty() ? 0.0 : bias[size_t(n)];
        double integer_model = b, exact = b, magnitude = std::fabs(b), rounding_bound = 0;
        for (int64_t g = 0; g < K / 32; ++g) {
          double largest = 0, weight_mass = 0;
          for (int64_t k = g * 32; k < g * 32 + 32; ++k) {
            const double weight = w.dequantised[size_t(n * K + k)];
            integer_model += weight * x_quantised[size_t(r * K + k)];
            exact += weight * x[size_t(r * K + k)];
            magnitude += std::fabs(weight * x_quantised[size_t(r * K + k)]);
            largest = std::max(largest, double(std::fabs(x[size_t(r * K + k)])));
            weight_mass += std::fabs(weight);
          }
          // Rounding to the grid of d_x = max|x| / 127 moves each element by at most d_x / 2.
          rounding_bound += weight_mass * largest / 254.0;
        }
        const float got = y[size_t(r * shape.out_features + n)];
        ASSERT_NEAR(got, integer_model, relative * magnitude + 1e-30) << "row " << r << ", column " << n;
        const double bound = rounding_bound * (1 + 1e-6) + relative * magnitude;
        ASSERT_NEAR(got, exact, bound) << "row " << r << ", column " << n;
        worst_fraction_of_bound = std::max(worst_fraction_of_bound, std::fabs(got - exact) / bound);
      }
    }
    // Rounding errors are independent, so they stay well inside the worst case.
    EXPECT_LT(worst_fraction_of_bound, 0.5);
  }
}

// Codes of the largest magnitude everywhere, with the activations' signs matching the weights' in some
// groups and opposed in others: every pair of products is ±2·127·127 (the most a 16-bit pair sum, as
// VPMADDUBSW makes, could hold without saturating) and a group's sum is ±32·127·127. The result must be exact.
TEST(QuantGemmExtremes, LargestCodesDoNotSaturate) {
  if (!kernels::quant_int8_gemm_available()) GTEST_SKIP() << "no int8 GEMM at " << kernels::kernel_level_name();
  constexpr int64_t kRows = 5, kOut = 24, kIn = 128;
  std::vector<uint8_t> codes(size_t(kOut * kIn));
  std::vector<uint16_t> scales(size_t(kOut * kIn / 32), uint16_t(0x3c00));  // half 1.0
  std::vector<float> x(size_t(kRows * kIn));
  for (int64_t n = 0; n < kOut; ++n)
    for (int64_t k = 0; k < kIn; ++k) codes[size_t(n * kIn + k)] = uint8_t(int8_t((n + k / 32) % 3 == 0 ? -127 : 127));
  for (int64_t r = 0; r < kRows; ++r)
    for (int64_t k = 0; k < kIn; ++k) x[size_t(r * kIn + k)] = (r + k / 32) % 2 == 0 ? 127.0f : -127.0f;
  const QuantMatrix w{WeightType::Q8_0, codes.data(), scales.data(), kOut, kIn};
  std::vector<float> y(size_t(kRows * kOut));
  linear_quant(x.data(), kRows, w, nullptr, y.data());
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t n = 0; n < kOut; ++n) {
      double expected = 0;
      for (int64_t k = 0; k < kIn; ++k) expected += double(int8_t(codes[size_t(n * kIn + k)])) * x[size_t(r * kIn + k)];
      EXPECT_EQ(y[size_t(r * kOut + n)], expected) << "row " << r << ", column " << n;
    }
  }
}

// At the scalar level (in the child runs of KernelLevels) the int8 GEMM is reported unavailable and the
// kernel refuses to run, so that callers take their fallback.
// Several weights on one input (a layer's q/k/v: N 896, 128, 128 at K 896 — Qwen2-0.5B — and a gate/up
// pair at a ragged N) give, bit for bit, what linear_quant gives on each alone: x is quantised once and the
// panels of all products share one loop, so only the order of work changes, never a sum.
TEST(QuantGemmShared, SeveralWeightsMatchEachAloneBitForBit) {
  if (!kernels::quant_int8_gemm_available()) GTEST_SKIP() << "no int8 GEMM at " << kernels::kernel_level_name();
  for (const WeightType type : {WeightType::Q8_0, WeightType::Q4_0}) {
    for (const std::vector<int64_t>& outs : {std::vector<int64_t>{896, 128, 128}, std::vector<int64_t>{200, 200}}) {
      SCOPED_TRACE(testing::Message() << weight_type_name(type) << ", " << outs.size() << " products");
      constexpr int64_t kRows = 37, kIn = 896;
      std::mt19937 generator(7);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> x(size_t(kRows * kIn));
      for (float& v : x) v = normal(generator);
      std::vector<QuantizedWeights> weights;
      std::vector<std::vector<float>> biases, shared, alone;
      for (size_t i = 0; i < outs.size(); ++i) {
        weights.push_back(make_quantized_weights(type, outs[i], kIn, uint32_t(11 + i)));
        biases.push_back(std::vector<float>(size_t(outs[i]), 0.5f * float(i)));
        shared.emplace_back(size_t(kRows * outs[i]), -1.0f);
        alone.emplace_back(size_t(kRows * outs[i]), -2.0f);
      }
      std::vector<QuantProduct> products;
      for (size_t i = 0; i < outs.size(); ++i)
        products.push_back({&weights[i].view, i == 0 ? nullptr : biases[i].data(), shared[i].data()});
      linear_quant(x.data(), kRows, products);
      for (size_t i = 0; i < outs.size(); ++i) {
        linear_quant(x.data(), kRows, weights[i].view, i == 0 ? nullptr : biases[i].data(), alone[i].data());
        for (size_t j = 0; j < alone[i].size(); ++j)
          ASSERT_EQ(std::bit_cast<uint32_t>(shared[i][j]), std::bit_cast<uint32_t>(alone[i][j]))
              << "product " << i << ", element " << j;
        // The loader's block layout (core/quant.h) packs the same panels.
        std::vector<float> blocked(alone[i].size(), -3.0f);
        linear_quant(x.data(), kRows, weights[i].blocked_view, i == 0 ? nullptr : biases[i].data(), blocked.data());
        ASSERT_EQ(blocked, alone[i]) << "product " << i << " on blocked rows";
      }
    }
  }
}

TEST(QuantGemmDispatch, UnavailableAndRefusedAtScalar) {
  if (active_isa() >= Isa::Avx2) GTEST_SKIP() << "checked in the run capped at scalar";
  EXPECT_FALSE(kernels::quant_int8_gemm_available());
  EXPECT_FALSE(kernels::int8_compute_available());
  const QuantizedWeights w = make_quantized_weights(WeightType::Q8_0, 16, 32, 1);
  std::vector<float> x(32, 1.0f), y(16);
  EXPECT_THROW(linear_quant(x.data(), 1, w.view, nullptr, y.data()), Error);
}

TEST(KernelLevels, LowerLevelsPass) { test_support::expect_lower_kernel_levels_pass(); }

INSTANTIATE_TEST_SUITE_P(Formats, QuantGemm, ::testing::Values(WeightType::Q8_0, WeightType::Q4_0),
                         [](const testing::TestParamInfo<WeightType>& info) {
                           return std::string(weight_type_name(info.param));
                         });

}  // namespace
}  // namespace fastvlm
