// An S8 Linear's products (the vision tower's Int8 compute) must be bit-identical to the route composed
// here from its parts: the weight quantised per output row (quantize_rows_s8), the exact int32 product
// (a scalar loop here), then the epilogue over the whole int32 matrix. The Linear runs amx_s8_gemm with
// the epilogue fused per block of 32 rows where the CPU has AMX-INT8, oneDNN's matmul_s8 with AVX512-VNNI,
// and avx2_s8_gemm fused per strip of 48 rows on AVX2, so this checks that each product and fusion (row
// offsets, padded accumulator rows, ragged M and N) changes no bit.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/tensor.h"
#include "kernels/capabilities.h"
#include "kernels/int8_epilogue.h"
#include "nn/linear.h"

namespace fastvlm {
namespace {

struct Case {
  int64_t rows, in, out;
};

std::vector<float> random_values(int64_t count, uint32_t seed, float spread) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, spread);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = normal(generator);
  return values;
}

// The layer and, beside it, the oneDNN route's int32 products of `codes` and the weight's scales.
struct Reference {
  Linear linear;
  std::vector<float> weight_scales, bias;
  std::vector<int32_t> acc;

  Reference(const Case& c, const std::vector<int8_t>& codes) : weight_scales(size_t(c.out)) {
    const std::vector<float> weight = random_values(c.out * c.in, uint32_t(c.out * 3 + c.in), 0.05f);
    bias = random_values(c.out, uint32_t(c.out), 0.1f);
    std::vector<int8_t> weight_codes(static_cast<size_t>(c.out * c.in));
    quantize_rows_s8(weight.data(), c.out, c.in, c.in, weight_codes.data(), weight_scales.data());
    acc.resize(size_t(c.rows * c.out));
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t o = 0; o < c.out; ++o) {
        int32_t sum = 0;  // at most in · 127², exact
        for (int64_t i = 0; i < c.in; ++i) sum += int32_t(codes[size_t(r * c.in + i)]) * weight_codes[size_t(o * c.in + i)];
        acc[size_t(r * c.out + o)] = sum;
      }
    Tensor w({c.out, c.in}), b({c.out});
    std::memcpy(w.data(), weight.data(), sizeof(float) * weight.size());
    std::memcpy(b.data(), bias.data(), sizeof(float) * bias.size());
    linear = Linear::from_f32(std::move(w), std::move(b), WeightType::S8);
  }
};

template <class T>
void expect_same_bits(const std::vector<T>& actual, const std::vector<T>& expected, const char* what) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i)
    ASSERT_EQ(std::memcmp(&actual[i], &expected[i], sizeof(T)), 0) << what << ", element " << i;
}

const std::vector<Case> kCases = {{1, 64, 32}, {45, 200, 70}, {100, 96, 384}, {77, 384, 1536}, {300, 768, 200}, {50, 33, 17}};

TEST(LinearS8, ProductsWithEpiloguesMatchOneDnnRouteBitForBit) {
  if (!kernels::vision_int8_available()) GTEST_SKIP() << "no int8 compute at " << kernels::kernel_level_name();
  for (const Case& c : kCases) {
    SCOPED_TRACE(testing::Message() << c.rows << " rows, " << c.in << " -> " << c.out);
    const std::vector<float> x = random_values(c.rows * c.in, uint32_t(c.rows + c.in), 1.0f);
    std::vector<int8_t> codes(static_cast<size_t>(c.rows * c.in));
    std::vector<float> row_scales(static_cast<size_t>(c.rows));
    quantize_rows_s8(x.data(), c.rows, c.in, c.in, codes.data(), row_scales.data());
    const Reference ref(c, codes);
    const int64_t n = c.rows * c.out;

    for (const Epilogue epilogue : {Epilogue::None, Epilogue::Gelu}) {
      std::vector<float> y(static_cast<size_t>(n)), expected(static_cast<size_t>(n));
      ref.linear.forward_s8(codes.data(), row_scales.data(), c.rows, {DType::F32, y.data()}, epilogue);
      dequantize_store(ref.acc.data(), c.rows, c.out, c.out, row_scales.data(), ref.weight_scales.data(),
                       ref.bias.data(), epilogue == Epilogue::Gelu, expected.data(), nullptr);
      expect_same_bits(y, expected, epilogue == Epilogue::Gelu ? "float32 GELU" : "float32");
    }
    if (kernels::bf16_compute_available()) {
      std::vector<uint16_t> y_bf16(static_cast<size_t>(n)), expected_bf16(static_cast<size_t>(n));
      ref.linear.forward_s8(codes.data(), row_scales.data(), c.rows, {DType::BF16, y_bf16.data()}, Epilogue::Gelu);
      dequantize_store(ref.acc.data(), c.rows, c.out, c.out, row_scales.data(), ref.weight_scales.data(),
                       ref.bias.data(), true, nullptr, expected_bf16.data());
      expect_same_bits(y_bf16, expected_bf16, "bfloat16 GELU");
    }

    std::vector<float> residual = random_values(n, 5, 1.0f), expected_residual = residual;
    ref.linear.forward_s8(codes.data(), row_scales.data(), c.rows, {DType::F32, residual.data()},
                          Epilogue::AddToOutput);
    dequantize_add(ref.acc.data(), c.rows, c.out, c.out, row_scales.data(), ref.weight_scales.data(),
                   ref.bias.data(), expected_residual.data());
    expect_same_bits(residual, expected_residual, "residual add");

    std::vector<int8_t> out_codes(static_cast<size_t>(n)), expected_codes(static_cast<size_t>(n));
    std::vector<float> out_scales(static_cast<size_t>(c.rows)), expected_scales(static_cast<size_t>(c.rows));
    ref.linear.forward_s8_gelu_requantize(codes.data(), row_scales.data(), c.rows, out_codes.data(),
                                          out_scales.data());
    dequantize_gelu_quantize(ref.acc.data(), c.rows, c.out, c.out, row_scales.data(), ref.weight_scales.data(),
                             ref.bias.data(), expected_codes.data(), expected_scales.data());
    expect_same_bits(out_codes, expected_codes, "requantised codes");
    expect_same_bits(out_scales, expected_scales, "requantised scales");

    // Float32 input, quantised per row by the layer itself (the attention's linears).
    std::vector<float> y(static_cast<size_t>(n)), expected(static_cast<size_t>(n));
    ref.linear.forward({DType::F32, const_cast<float*>(x.data())}, c.rows, {DType::F32, y.data()}, Epilogue::None);
    dequantize_store(ref.acc.data(), c.rows, c.out, c.out, row_scales.data(), ref.weight_scales.data(),
                     ref.bias.data(), false, expected.data(), nullptr);
    expect_same_bits(y, expected, "float32 input");
  }
}

}  // namespace
}  // namespace fastvlm
