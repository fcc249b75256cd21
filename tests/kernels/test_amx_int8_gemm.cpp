// amx_s8_gemm (kernels/amx_int8_gemm.h) against oneDNN's matmul_s8 and a scalar int64 reference: int32
// sums are exact, so every element must be equal. The shapes cover ragged M (a last strip of fewer than
// 32 rows), ragged N (a last block of fewer than 32 columns), ragged K (not a multiple of 64: the rows are
// staged, zero-padded), rows `lda` apart with lda > K, K long enough to be walked in chunks, odd numbers
// of strips (the pairs' remainder), and weights large enough to be split into panels of columns (with
// ragged K and M at once, and more rows than one pass over the panels takes). Also that the row blocks
// reach the sink once each, in order, 32 rows at a time.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "core/error.h"
#include "kernel_levels.h"
#include "kernels/amx_int8_gemm.h"
#include "kernels/capabilities.h"
#include "kernels/gemm.h"

namespace fastvlm {
namespace {

struct Shape {
  int64_t M, K, N, lda;
};

std::vector<int8_t> random_codes(int64_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int> code(-128, 127);  // -128 too: TDPBSSD takes any s8
  std::vector<int8_t> codes(static_cast<size_t>(count));
  for (int8_t& c : codes) c = int8_t(code(generator));
  return codes;
}

TEST(AmxS8Gemm, MatchesOneDnnAndScalarSumsExactly) {
  if (!kernels::int8_tiles_available()) GTEST_SKIP() << "no AMX-INT8 at " << kernels::kernel_level_name();
  const std::vector<Shape> shapes = {
      {1, 64, 32, 64},        {31, 96, 384, 96},      {33, 100, 17, 100},     {64, 192, 768, 200},
      {77, 1536, 40, 1536},   {96, 1600, 600, 1600},  {45, 3104, 300, 3104},  {70, 200, 4100, 208},
      {300, 1536, 800, 1536}, {512, 96, 384, 96},     {128, 768, 3072, 768},  {64, 96, 100, 96}};
  for (const Shape& shape : shapes) {
    const auto [M, K, N, lda] = shape;
    SCOPED_TRACE(testing::Message() << "M " << M << ", K " << K << ", N " << N << ", lda " << lda);
    const std::vector<int8_t> a = random_codes(M * lda, uint32_t(M * 7 + K)), b = random_codes(N * K, uint32_t(N + 3));
    std::vector<int32_t> amx(static_cast<size_t>(M * N), -1);
    int64_t next_row = 0;
    auto collect = [&](const int32_t* acc, int64_t stride, int64_t first, int64_t count) {
      ASSERT_EQ(first, next_row);
      ASSERT_EQ(count, std::min<int64_t>(32, M - first));
      ASSERT_GE(stride, N);
      for (int64_t r = 0; r < count; ++r)
        for (int64_t c = 0; c < N; ++c) amx[size_t((first + r) * N + c)] = acc[r * stride + c];
      next_row = first + count;
    };
    amx_s8_gemm(a.data(), M, lda, AmxS8Weights(b.data(), N, K), collect);
    ASSERT_EQ(next_row, M);

    std::vector<int32_t> onednn(static_cast<size_t>(M * N));
    const PackedWeights packed(b.data(), N, K);
    matmul_s8({.M = M, .a = a.data(), .lda = lda, .b = &packed, .c = onednn.data(), .ldc = N});
    for (int64_t r = 0; r < M; ++r)
      for (int64_t c = 0; c < N; ++c) {
        int64_t sum = 0;
        for (int64_t k = 0; k < K; ++k) sum += int64_t(a[size_t(r * lda + k)]) * b[size_t(c * K + k)];
        const size_t at = size_t(r * N + c);
        ASSERT_EQ(amx[at], sum) << "row " << r << ", column " << c;
        ASSERT_EQ(amx[at], onednn[at]) << "row " << r << ", column " << c;
      }
  }
}

TEST(AmxS8Gemm, NoRowsCallsNothing) {
  if (!kernels::int8_tiles_available()) GTEST_SKIP() << "no AMX-INT8 at " << kernels::kernel_level_name();
  const std::vector<int8_t> b = random_codes(32 * 64, 1);
  int calls = 0;
  auto count_calls = [&](const int32_t*, int64_t, int64_t, int64_t) { ++calls; };
  amx_s8_gemm(nullptr, 0, 64, AmxS8Weights(b.data(), 32, 64), count_calls);
  EXPECT_EQ(calls, 0);
}

TEST(AmxS8GemmErrors, RefusesWithoutAmxInt8) {
  if (kernels::int8_tiles_available()) GTEST_SKIP() << "AMX-INT8 present: covered by the child runs below amx";
  const std::vector<int8_t> b(64, 1);
  EXPECT_THROW(AmxS8Weights(b.data(), 1, 64), Error);
}

TEST(KernelLevels, LowerLevelsPass) { test_support::expect_lower_kernel_levels_pass(); }

}  // namespace
}  // namespace fastvlm
