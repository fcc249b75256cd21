// The vectorised weight quantisation (kernels/weight_quant.h) against core's scalar quantize_matrix on the
// same weights widened to float32: codes and scales must be equal bit for bit, for Q8_0 and Q4_0, from
// float32, bfloat16 and float16 rows, on groups of every scale the types reach (zeros and negative zeros,
// scales that round to half subnormals or overflow to infinity, the largest magnitude twice with opposite
// signs, which Q4_0's scale takes the sign of). NaNs and infinities are reported by their first row-major
// index. The kernel runs at every level this CPU has (the lower ones in child processes, kernel_levels.h).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/quant.h"
#include "kernel_levels.h"
#include "kernels/weight_quant.h"

namespace fastvlm {
namespace {

constexpr int64_t kCols = 256;  // 8 groups per row

// Float weights, row-major [rows, kCols]: each group drawn at its own scale, with the special groups above
// among them. `largest_scale` keeps float16 sources finite.
std::vector<float> make_weights(int64_t rows, float largest_scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> exponent(-9.0f, std::log10(largest_scale));
  std::vector<float> w(size_t(rows * kCols));
  for (int64_t group = 0; group < rows * kCols / kQuantGroupSize; ++group) {
    float* g = w.data() + group * kQuantGroupSize;
    const float scale = std::pow(10.0f, exponent(rng));
    for (int i = 0; i < kQuantGroupSize; ++i) g[i] = normal(rng) * scale;
    switch (group % 9) {
      case 0: std::fill(g, g + kQuantGroupSize, 0.0f); break;
      case 1: std::fill(g, g + kQuantGroupSize, -0.0f); break;
      case 2: g[5] = 4.0f * scale, g[20] = -4.0f * scale; break;   // equal magnitudes, positive first
      case 3: g[3] = -4.0f * scale, g[30] = 4.0f * scale; break;   // negative first
      case 4: g[17] = -4.0f * scale, g[18] = 4.0f * scale; break;  // both in the second half
      case 5: for (int i = 0; i < kQuantGroupSize; ++i) g[i] = float(i - 16) * 0.5f * scale; break;  // halves
      default: break;
    }
  }
  return w;
}

std::vector<uint16_t> stored_as(DType type, const std::vector<float>& w) {
  std::vector<uint16_t> bits(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    if (type == DType::BF16) {
      uint32_t f;
      std::memcpy(&f, &w[i], sizeof f);
      bits[i] = uint16_t(f >> 16);  // any bfloat16 pattern will do
    } else {
      bits[i] = f32_to_f16(w[i]);
    }
  }
  return bits;
}

struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
  int64_t first_bad = -1;
};

Quantized reference(WeightType type, DType source, const void* weights, int64_t rows) {
  std::vector<float> widened(size_t(rows * kCols));
  convert_to_f32(source, weights, widened.data(), widened.size());
  Quantized q{std::vector<uint8_t>(size_t(rows * quant_row_bytes(type, kCols))),
              std::vector<uint16_t>(size_t(rows * kCols / kQuantGroupSize))};
  quantize_matrix(type, widened.data(), rows, kCols, q.codes.data(), q.scales.data());
  return q;
}

Quantized vectorised(WeightType type, DType source, const void* weights, int64_t rows) {
  Quantized q{std::vector<uint8_t>(size_t(rows * quant_row_bytes(type, kCols))),
              std::vector<uint16_t>(size_t(rows * kCols / kQuantGroupSize))};
  q.first_bad = quantize_weight_rows(type, source, weights, rows, kCols, q.codes.data(), q.scales.data());
  return q;
}

const void* source_data(DType source, const std::vector<float>& f32, const std::vector<uint16_t>& halves) {
  return source == DType::F32 ? static_cast<const void*>(f32.data()) : static_cast<const void*>(halves.data());
}

TEST(WeightQuant, MatchesCoreBitForBit) {
  constexpr int64_t kRows = 37;
  for (const WeightType type : {WeightType::Q8_0, WeightType::Q4_0})
    for (const DType source : {DType::F32, DType::BF16, DType::F16}) {
      SCOPED_TRACE(std::string(weight_type_name(type)) + " from " + std::string(dtype_name(source)));
      // Up to ~1e7 (scales past half's 65504 overflow to infinity), where float16 cannot hold it up to ~1e3.
      const std::vector<float> f32 = make_weights(kRows, source == DType::F16 ? 1.0e3f : 1.0e7f, 7 + int(source));
      const std::vector<uint16_t> halves = source == DType::F32 ? std::vector<uint16_t>() : stored_as(source, f32);
      const void* data = source_data(source, f32, halves);
      const Quantized want = reference(type, source, data, kRows), got = vectorised(type, source, data, kRows);
      EXPECT_EQ(got.first_bad, -1);
      ASSERT_EQ(got.scales, want.scales);
      ASSERT_EQ(got.codes, want.codes);
    }
}

TEST(WeightQuant, ReportsTheFirstNonFiniteWeight) {
  constexpr int64_t kRows = 6;
  const float nan = std::numeric_limits<float>::quiet_NaN(), infinity = std::numeric_limits<float>::infinity();
  for (const WeightType type : {WeightType::Q8_0, WeightType::Q4_0})
    for (const DType source : {DType::F32, DType::BF16, DType::F16}) {
      SCOPED_TRACE(std::string(weight_type_name(type)) + " from " + std::string(dtype_name(source)));
      std::vector<float> f32 = make_weights(kRows, 1.0e3f, 11);
      // Row 4's first bad weight comes later in its row than row 5's, and row-major order puts it first.
      f32[size_t(4 * kCols + 200)] = -infinity;
      f32[size_t(4 * kCols + 230)] = nan;
      f32[size_t(5 * kCols + 3)] = nan;
      const std::vector<uint16_t> halves = source == DType::F32 ? std::vector<uint16_t>() : stored_as(source, f32);
      EXPECT_EQ(vectorised(type, source, source_data(source, f32, halves), kRows).first_bad, 4 * kCols + 200);
      f32[size_t(4 * kCols + 200)] = 1.0f;
      const std::vector<uint16_t> halves2 = source == DType::F32 ? std::vector<uint16_t>() : stored_as(source, f32);
      EXPECT_EQ(vectorised(type, source, source_data(source, f32, halves2), kRows).first_bad, 4 * kCols + 230);
    }
}

TEST(WeightQuant, RefusesRowsNotInGroups) {
  std::vector<float> w(48, 1.0f);
  std::vector<uint8_t> codes(48);
  std::vector<uint16_t> scales(2);
  EXPECT_THROW(quantize_weight_rows(WeightType::Q8_0, DType::F32, w.data(), 1, 48, codes.data(), scales.data()), Error);
}

TEST(KernelLevels, WeightQuantPassesAtLowerLevels) { test_support::expect_lower_kernel_levels_pass(); }

}  // namespace
}  // namespace fastvlm
