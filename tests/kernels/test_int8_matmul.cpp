// The int8 product on packed weights (kernels/gemm.h: PackedS8Weights, matmul_s8) against an int64
// scalar reference written here: the result must be exact. Shapes cover odd M, N and K (K not a multiple
// of AMX's 64-byte tile rows nor of VNNI's 4-byte groups), a single row, row strides wider than the
// rows, and the vision tower's tile shapes. Where the CPU has AMX the binary re-runs itself under
// FASTVLM_ISA=avx512, so that oneDNN's VNNI kernels (and their packed layout with the s8·s8 compensation)
// are checked too; below AVX-512 the product must refuse to run.
#include <gtest/gtest.h>

#include <cstdlib>
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
  const PackedS8Weights packed(b.data(), shape.N, shape.K);
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
  const PackedS8Weights packed(b.data(), shape.N, shape.K);
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
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           const Shape& s = info.param;
                           return "M" + std::to_string(s.M) + "N" + std::to_string(s.N) + "K" + std::to_string(s.K) +
                                  "lda" + std::to_string(s.lda) + "ldc" + std::to_string(s.ldc);
                         });

TEST(Int8MatmulErrors, RefusesWithoutVnni) {
  if (kernels::int8_compute_available()) GTEST_SKIP() << "this level has int8 kernels";
  const std::vector<int8_t> b(16, 1);
  EXPECT_THROW(PackedS8Weights(b.data(), 4, 4), Error);
}

TEST(Int8MatmulErrors, RefusesAnEmptyMatrix) {
  if (!kernels::int8_compute_available()) GTEST_SKIP() << "no AVX512-VNNI at " << kernels::kernel_level_name();
  const std::vector<int8_t> b(4, 1);
  EXPECT_THROW(PackedS8Weights(b.data(), 0, 4), Error);
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
