// avx2_s8_gemm (kernels/avx2_int8_gemm.h) against a scalar int64 reference: int32 sums are exact, so every
// element must be equal. Codes span the symmetric range the tower uses, ±127 included (all-127 rows are
// where 8-bit pair products saturate). The shapes cover a last group of fewer than 6 rows and a last strip
// of fewer than 48, N not a multiple of 16 (a padded panel), odd K (a zero-padded pair), rows `lda` apart
// with lda > K, weights larger than one 256 KB block of panels, and the tower's widths. Also that the
// strips reach the sink once each, in order.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "core/error.h"
#include "kernel_levels.h"
#include "kernels/avx2_int8_gemm.h"
#include "kernels/capabilities.h"

namespace fastvlm {
namespace {

struct Shape {
  int64_t M, K, N, lda;
};

std::vector<int8_t> random_codes(int64_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int> code(-127, 127);
  std::vector<int8_t> codes(static_cast<size_t>(count));
  for (int8_t& c : codes) c = int8_t(code(generator));
  return codes;
}

// C as the sink receives it, checking the order and sizes of the strips.
std::vector<int32_t> product(const std::vector<int8_t>& a, const Shape& shape, const Avx2S8Weights& weights) {
  const auto [M, K, N, lda] = shape;
  std::vector<int32_t> c(static_cast<size_t>(M * N), -1);
  int64_t next_row = 0;
  auto collect = [&](const int32_t* acc, int64_t stride, int64_t first, int64_t count) {
    EXPECT_EQ(first, next_row);
    EXPECT_GT(count, 0);
    EXPECT_GE(stride, N);
    for (int64_t r = 0; r < count; ++r)
      for (int64_t col = 0; col < stride; ++col) {
        if (col < N)
          c[size_t((first + r) * N + col)] = acc[r * stride + col];
        else
          EXPECT_EQ(acc[r * stride + col], 0) << "padding column " << col;
      }
    next_row = first + count;
  };
  avx2_s8_gemm(a.data(), M, lda, weights, collect);
  EXPECT_EQ(next_row, M);
  return c;
}

TEST(Avx2S8Gemm, MatchesScalarSumsExactly) {
  if (!kernels::vision_int8_available()) GTEST_SKIP() << "no AVX2 at " << kernels::kernel_level_name();
  const std::vector<Shape> shapes = {{1, 2, 16, 2},        {5, 7, 17, 9},         {6, 96, 288, 96},
                                     {47, 384, 1152, 384}, {49, 1152, 384, 1160}, {100, 33, 40, 33},
                                     {13, 3072, 768, 3072}, {64, 768, 3072, 768}, {7, 4607, 50, 4607}};
  for (const Shape& shape : shapes) {
    const auto [M, K, N, lda] = shape;
    SCOPED_TRACE(testing::Message() << "M " << M << ", K " << K << ", N " << N << ", lda " << lda);
    const std::vector<int8_t> a = random_codes(M * lda, uint32_t(M * 7 + K)), b = random_codes(N * K, uint32_t(N + 3));
    const std::vector<int32_t> c = product(a, shape, Avx2S8Weights(b.data(), N, K));
    for (int64_t r = 0; r < M; ++r)
      for (int64_t col = 0; col < N; ++col) {
        int64_t sum = 0;
        for (int64_t k = 0; k < K; ++k) sum += int64_t(a[size_t(r * lda + k)]) * b[size_t(col * K + k)];
        ASSERT_EQ(c[size_t(r * N + col)], sum) << "row " << r << ", column " << col;
      }
  }
}

TEST(Avx2S8Gemm, ExtremeCodesDoNotSaturate) {
  if (!kernels::vision_int8_available()) GTEST_SKIP() << "no AVX2 at " << kernels::kernel_level_name();
  const Shape shape{8, 64, 16, 64};
  std::vector<int8_t> a(size_t(shape.M * shape.K), 127), b(size_t(shape.N * shape.K), 127);
  for (int64_t k = 0; k < shape.K; ++k) b[size_t(shape.K + k)] = -127;  // output 1: all -127
  const std::vector<int32_t> c = product(a, shape, Avx2S8Weights(b.data(), shape.N, shape.K));
  EXPECT_EQ(c[0], 64 * 127 * 127);
  EXPECT_EQ(c[1], -64 * 127 * 127);
}

TEST(Avx2S8Gemm, NoRowsCallsNothing) {
  if (!kernels::vision_int8_available()) GTEST_SKIP() << "no AVX2 at " << kernels::kernel_level_name();
  const std::vector<int8_t> b = random_codes(16 * 64, 1);
  int calls = 0;
  auto count_calls = [&](const int32_t*, int64_t, int64_t, int64_t) { ++calls; };
  avx2_s8_gemm(nullptr, 0, 64, Avx2S8Weights(b.data(), 16, 64), count_calls);
  EXPECT_EQ(calls, 0);
}

TEST(Avx2S8GemmErrors, RefusesBelowAvx2) {
  if (kernels::vision_int8_available()) GTEST_SKIP() << "AVX2 present: covered by the child run at scalar";
  const std::vector<int8_t> b(64, 1);
  EXPECT_THROW(Avx2S8Weights(b.data(), 1, 64), Error);
}

TEST(KernelLevels, LowerLevelsPass) { test_support::expect_lower_kernel_levels_pass(); }

}  // namespace
}  // namespace fastvlm
