// Products on weights packed at load (kernels/gemm.h: PackedWeights) against scalar references written
// here: the int8 product (matmul_s8) against int64 sums, exactly; the bfloat16 and float32 products (matmul
// with packed_b) on small-integer operands, whose float32 sums are exact, with bias, residual add and GELU.
// Shapes cover odd M, N and K (K not a multiple of AMX's 64-byte tile rows nor of VNNI's 4-byte groups), a
// single row, row strides wider than the rows, and the vision tower's tile shapes. Where the CPU has AMX the
// binary re-runs itself under FASTVLM_ISA=avx512, so that oneDNN's VNNI and AVX512-BF16 kernels (and their
// packed layouts, int8 with the s8·s8 compensation) are checked too; below AVX-512 int8 and bfloat16
// packing must refuse to run, float32 packing runs (and is checked) at every level.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/cpu.h"
#include "core/error.h"
#include "kernel_levels.h"
#include "kernels/capabilities.h"
#include "kernels/gemm.h"

namespace fastvlm {
namespace {

struct Shape {
  int64_t M, N, K, lda, ldc;
};

std::string shape_name(const ::testing::TestParamInfo<Shape>& info) {
  const Shape& s = info.param;
  return "M" + std::to_string(s.M) + "N" + std::to_string(s.N) + "K" + std::to_string(s.K) + "lda" +
         std::to_string(s.lda) + "ldc" + std::to_string(s.ldc);
}

std::vector<int8_t> random_codes(size_t count, std::mt19937& generator) {
  // The tower's codes are symmetric, in [-127, 127] (kernels/int8_epilogue.h).
  std::uniform_int_distribution<int> code(-127, 127);
  std::vector<int8_t> codes(count);
  for (int8_t& c : codes) c = int8_t(code(generator));
  return codes;
}

class Int8Matmul : public ::testing::TestWithParam<Shape> {};

TEST_P(Int8Matmul, IsExactAgainstScalarReference) {
  if (!kernels::int8_compute_available()) GTEST_SKIP() << "no AVX512-VNNI at " << kernels::kernel_level_name();
  const Shape shape = GetParam();
  std::mt19937 generator(uint32_t(shape.M * 131 + shape.N * 7 + shape.K));
  const std::vector<int8_t> a = random_codes(size_t(shape.M * shape.lda), generator);
  const std::vector<int8_t> b = random_codes(size_t(shape.N * shape.K), generator);
  const PackedWeights packed(b.data(), shape.N, shape.K);
  EXPECT_EQ(packed.rows(), shape.N);
  EXPECT_EQ(packed.cols(), shape.K);
  // Columns past N in each output row must stay untouched.
  constexpr int32_t kUntouched = 0x5a5a5a5a;
  std::vector<int32_t> c(size_t(shape.M * shape.ldc), kUntouched);
  matmul_s8({.M = shape.M, .a = a.data(), .lda = shape.lda, .b = &packed, .c = c.data(), .ldc = shape.ldc});
  for (int64_t m = 0; m < shape.M; ++m) {
    for (int64_t n = 0; n < shape.ldc; ++n) {
      const int32_t actual = c[size_t(m * shape.ldc + n)];
      if (n >= shape.N) {
        ASSERT_EQ(actual, kUntouched) << "wrote past N at row " << m << ", column " << n;
        continue;
      }
      int64_t expected = 0;
      for (int64_t k = 0; k < shape.K; ++k) expected += int64_t(a[size_t(m * shape.lda + k)]) * b[size_t(n * shape.K + k)];
      ASSERT_EQ(int64_t(actual), expected) << "row " << m << ", column " << n;
    }
  }
}

TEST_P(Int8Matmul, ReusesPackedWeightsAcrossRowCounts) {
  if (!kernels::int8_compute_available()) GTEST_SKIP() << "no AVX512-VNNI at " << kernels::kernel_level_name();
  // One packing serves every M (the tower's tail tiles are shorter than the rest): row r of a product on
  // the first M rows equals row r of the product on all rows.
  const Shape shape = GetParam();
  std::mt19937 generator(7);
  const std::vector<int8_t> a = random_codes(size_t(shape.M * shape.lda), generator);
  const std::vector<int8_t> b = random_codes(size_t(shape.N * shape.K), generator);
  const PackedWeights packed(b.data(), shape.N, shape.K);
  std::vector<int32_t> all(size_t(shape.M * shape.ldc)), head(size_t(shape.M * shape.ldc));
  matmul_s8({.M = shape.M, .a = a.data(), .lda = shape.lda, .b = &packed, .c = all.data(), .ldc = shape.ldc});
  const int64_t rows = (shape.M + 1) / 2;
  matmul_s8({.M = rows, .a = a.data(), .lda = shape.lda, .b = &packed, .c = head.data(), .ldc = shape.ldc});
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t n = 0; n < shape.N; ++n)
      ASSERT_EQ(head[size_t(m * shape.ldc + n)], all[size_t(m * shape.ldc + n)]) << "row " << m << ", column " << n;
}

INSTANTIATE_TEST_SUITE_P(Shapes, Int8Matmul,
                         ::testing::Values(Shape{1, 1, 1, 1, 1}, Shape{1, 24, 40, 40, 24}, Shape{3, 100, 32, 32, 100},
                                           Shape{17, 33, 100, 104, 40}, Shape{64, 384, 96, 96, 384},
                                           Shape{129, 96, 384, 400, 96}, Shape{128, 1536, 384, 384, 1536},
                                           Shape{300, 192, 768, 768, 200}, Shape{5, 7, 13, 13, 7}),
                         shape_name);

class Bf16PackedMatmul : public ::testing::TestWithParam<Shape> {};

// Small integers are exact in bfloat16, and so are their products and sums in float32 (|sum| < 2^24).
std::vector<uint16_t> small_integers_bf16(size_t count, std::mt19937& generator, std::vector<float>& values) {
  std::uniform_int_distribution<int> integer(-8, 8);
  std::vector<uint16_t> bits(count);
  values.resize(count);
  for (size_t i = 0; i < count; ++i) {
    values[i] = float(integer(generator));
    uint32_t word;
    std::memcpy(&word, &values[i], sizeof(word));
    bits[i] = uint16_t(word >> 16);
  }
  return bits;
}

// c ([shape.M, shape.ldc], filled with 3 before) after a product of its first `rows` rows with `epilogue`:
// each cell of the product against the double reference of a·bᵀ + bias on small-integer operands (exact in
// float32; GELU within 1e-5), every other cell untouched.
void expect_product(const Shape& shape, int64_t rows, Epilogue epilogue, const std::vector<float>& c,
                    const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& bias) {
  for (int64_t m = 0; m < shape.M; ++m) {
    for (int64_t n = 0; n < shape.ldc; ++n) {
      const float actual = c[size_t(m * shape.ldc + n)];
      if (n >= shape.N || m >= rows) {
        ASSERT_EQ(actual, 3.0f) << "wrote outside the product at row " << m << ", column " << n;
        continue;
      }
      double sum = bias[size_t(n)];
      for (int64_t k = 0; k < shape.K; ++k) sum += double(a[size_t(m * shape.lda + k)]) * b[size_t(n * shape.K + k)];
      if (epilogue == Epilogue::AddToOutput) {
        ASSERT_EQ(actual, float(sum + 3.0)) << "row " << m << ", column " << n;
      } else if (epilogue == Epilogue::Gelu) {
        const double gelu = 0.5 * sum * (1.0 + std::erf(sum / std::sqrt(2.0)));
        ASSERT_NEAR(actual, gelu, 1e-5 * std::max(1.0, std::abs(gelu))) << "row " << m << ", column " << n;
      } else {
        ASSERT_EQ(actual, float(sum)) << "row " << m << ", column " << n;
      }
    }
  }
}

TEST_P(Bf16PackedMatmul, MatchesScalarReferenceWithEachEpilogue) {
  if (!kernels::bf16_compute_available()) GTEST_SKIP() << "no AVX512-BF16 at " << kernels::kernel_level_name();
  const Shape shape = GetParam();
  std::mt19937 generator(uint32_t(shape.M * 17 + shape.N * 5 + shape.K));
  std::vector<float> a_values, b_values;
  const std::vector<uint16_t> a = small_integers_bf16(size_t(shape.M * shape.lda), generator, a_values);
  const std::vector<uint16_t> b = small_integers_bf16(size_t(shape.N * shape.K), generator, b_values);
  std::vector<float> bias(static_cast<size_t>(shape.N));
  for (int64_t n = 0; n < shape.N; ++n) bias[size_t(n)] = float(n % 9) - 4.0f;
  const PackedWeights packed(b.data(), shape.N, shape.K);
  EXPECT_EQ(packed.type(), DType::BF16);
  for (const Epilogue epilogue : {Epilogue::None, Epilogue::AddToOutput, Epilogue::Gelu}) {
    std::vector<float> c(static_cast<size_t>(shape.M * shape.ldc), 3.0f);
    matmul({.M = shape.M, .N = shape.N, .K = shape.K, .ab_type = DType::BF16, .a = a.data(), .lda = shape.lda,
            .packed_b = &packed, .c = c.data(), .ldc = shape.ldc, .bias = bias.data(), .epilogue = epilogue});
    ASSERT_NO_FATAL_FAILURE(expect_product(shape, shape.M, epilogue, c, a_values, b_values, bias));
  }
}

TEST(Bf16PackedMatmulErrors, RefusesWeightsOfAnotherShape) {
  if (!kernels::bf16_compute_available()) GTEST_SKIP() << "no AVX512-BF16 at " << kernels::kernel_level_name();
  const std::vector<uint16_t> a(12, 0x3f80), b(12, 0x3f80);
  std::vector<float> c(9);
  const PackedWeights packed(b.data(), 3, 4);
  EXPECT_THROW(matmul({.M = 3, .N = 4, .K = 3, .ab_type = DType::BF16, .a = a.data(), .lda = 3, .packed_b = &packed,
                       .c = c.data(), .ldc = 4}),
               Error);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Bf16PackedMatmul,
                         ::testing::Values(Shape{1, 1, 1, 1, 1}, Shape{3, 100, 32, 32, 100}, Shape{17, 33, 100, 104, 40},
                                           Shape{129, 96, 384, 400, 96}, Shape{256, 384, 96, 96, 384},
                                           Shape{5, 7, 13, 13, 7}),
                         shape_name);

class F32PackedMatmul : public ::testing::TestWithParam<Shape> {};

// The float32 reference path's 1x1 convs (vision tower at Precision::F32) on weights packed at load, at
// every kernel level: small-integer operands, whose float32 sums are exact, against a scalar reference,
// and the same packing reused for a shorter product (the tower's tail tiles).
TEST_P(F32PackedMatmul, MatchesScalarReferenceWithEachEpilogue) {
  const Shape shape = GetParam();
  std::mt19937 generator(uint32_t(shape.M * 29 + shape.N * 3 + shape.K));
  std::uniform_int_distribution<int> integer(-8, 8);
  std::vector<float> a(size_t(shape.M * shape.lda)), b(size_t(shape.N * shape.K)), bias(size_t(shape.N));
  for (float& value : a) value = float(integer(generator));
  for (float& value : b) value = float(integer(generator));
  for (int64_t n = 0; n < shape.N; ++n) bias[size_t(n)] = float(n % 9) - 4.0f;
  const PackedWeights packed(b.data(), shape.N, shape.K);
  EXPECT_EQ(packed.type(), DType::F32);
  for (const int64_t rows : {shape.M, (shape.M + 1) / 2})
    for (const Epilogue epilogue : {Epilogue::None, Epilogue::AddToOutput, Epilogue::Gelu}) {
      std::vector<float> c(static_cast<size_t>(shape.M * shape.ldc), 3.0f);
      matmul({.M = rows, .N = shape.N, .K = shape.K, .ab_type = DType::F32, .a = a.data(), .lda = shape.lda,
              .packed_b = &packed, .c = c.data(), .ldc = shape.ldc, .bias = bias.data(), .epilogue = epilogue});
      ASSERT_NO_FATAL_FAILURE(expect_product(shape, rows, epilogue, c, a, b, bias));
    }
}

// At the AVX2 level (avx2_f32_gemm) the last four also cover: K in several slices of 256 with an odd
// remainder, a whole 6-row group and one more row, a partial last 16-column panel, and (300 rows) strips of
// rows split between threads.
INSTANTIATE_TEST_SUITE_P(Shapes, F32PackedMatmul,
                         ::testing::Values(Shape{1, 1, 1, 1, 1}, Shape{1, 192, 300, 300, 192}, Shape{3, 100, 32, 32, 100},
                                           Shape{17, 33, 100, 104, 40}, Shape{64, 200, 96, 96, 200},
                                           Shape{129, 96, 384, 400, 96}, Shape{256, 384, 96, 96, 384},
                                           Shape{5, 7, 13, 13, 7}, Shape{6, 16, 257, 257, 16}, Shape{7, 48, 513, 520, 50},
                                           Shape{300, 40, 600, 611, 45}, Shape{12, 1000, 64, 64, 1000}),
                         shape_name);

TEST(PackedWeightsErrors, PackingRefusesBelowAvx512) {
  if (kernels::int8_compute_available()) GTEST_SKIP() << "this level has int8 kernels";
  const std::vector<int8_t> b(16, 1);
  EXPECT_THROW(PackedWeights(b.data(), 4, 4), Error);
  if (kernels::bf16_compute_available()) return;
  const std::vector<uint16_t> bf16(16, 0x3f80);
  EXPECT_THROW(PackedWeights(bf16.data(), 4, 4), Error);
}

TEST(PackedWeightsErrors, RefusesAnEmptyMatrix) {
  if (!kernels::int8_compute_available()) GTEST_SKIP() << "no AVX512-VNNI at " << kernels::kernel_level_name();
  const std::vector<int8_t> b(4, 1);
  EXPECT_THROW(PackedWeights(b.data(), 0, 4), Error);
}

TEST(KernelLevels, LowerLevelsPass) {
  test_support::expect_lower_kernel_levels_pass();
  // The VNNI kernels (without tiles) on a CPU with AMX.
  if (std::getenv("FASTVLM_ISA") || detected_isa() != Isa::Amx) return;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string command = "FASTVLM_ISA=avx512 '" + self + "' --gtest_filter='-KernelLevels.*' > /dev/null 2>&1";
  EXPECT_EQ(std::system(command.c_str()), 0) << "failed with FASTVLM_ISA=avx512: rerun  " << command;
}

}  // namespace
}  // namespace fastvlm
