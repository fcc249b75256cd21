#include "kernels/avx2_int8_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/capabilities.h"
#include "kernels/target.h"

namespace fastvlm {
namespace {

constexpr int64_t kPanelRows = 16;  // output rows (columns of C) per panel: two registers of 8 int32 sums
// Rows of A per register block: 6 x 2 sums, the panel's two registers and a broadcast fill 15 of the 16
// ymm registers; each step of K then loads 2 weight vectors and 6 activation pairs for 12 VPMADDWDs.
constexpr int kGroupRows = 6;
// Rows handed to the sink at once: each weight is loaded once per strip, so 48 rows read a 2-byte weight
// per 48 multiply-accumulates (~3 GB/s per core at the peak rate when the weights stream from L3).
constexpr int64_t kStripRows = 48;
// Panels multiplied by all of a strip's row groups in turn: up to 256 KB of them, half of Zen 3's L2, so
// that they come from L2 for every group after the first.
constexpr int64_t kBlockBytes = 256 << 10;

// `rows` rows of K codes (`lda` apart) as int16, `padded` (K rounded up to even, the extra one zero) apart.
FASTVLM_TARGET_AVX2 void widen_rows(const int8_t* a, int64_t rows, int64_t K, int64_t lda, int64_t padded,
                                    int16_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* src = a + r * lda;
    int16_t* dst = out + r * padded;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k),
                          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k))));
    for (; k < K; ++k) dst[k] = src[k];
    for (; k < padded; ++k) dst[k] = 0;
  }
}

// C[R rows, 16 columns] = the R widened rows at `a` (`a_stride` apart) times one panel, over every pair of K.
template <int R>
FASTVLM_TARGET_AVX2 void multiply_panel(const int16_t* a, int64_t a_stride, const int16_t* panel, int64_t pairs,
                                        int32_t* c, int64_t ldc) {
  __m256i sums[R][2];
  for (int r = 0; r < R; ++r) sums[r][0] = sums[r][1] = _mm256_setzero_si256();
  for (int64_t q = 0; q < pairs; ++q) {
    const __m256i low = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + q * 32));
    const __m256i high = _mm256_load_si256(reinterpret_cast<const __m256i*>(panel + q * 32 + 16));
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + r * a_stride + 2 * q, sizeof(pair));
      const __m256i x = _mm256_set1_epi32(pair);
      sums[r][0] = _mm256_add_epi32(sums[r][0], _mm256_madd_epi16(x, low));
      sums[r][1] = _mm256_add_epi32(sums[r][1], _mm256_madd_epi16(x, high));
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * ldc), sums[r][0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * ldc + 8), sums[r][1]);
  }
}

// The same for a whole group of 6 rows, in assembly: GCC keeps the sums in registers up to 4 rows but
// spills some of the 12 of 6 rows to the stack inside the loop (~75 G op/s against 6 rows here).
// Registers: sums ymm0-11 (row r: ymm 2r, 2r+1), the panel's pair ymm12-13, the broadcast activation
// pair ymm14, each product ymm15.
FASTVLM_TARGET_AVX2 void multiply_panel_6(const int16_t* a, int64_t a_stride, const int16_t* panel, int64_t pairs,
                                          int32_t* c, int64_t ldc) {
  const int64_t row_bytes = a_stride * int64_t(sizeof(int16_t)), c_bytes = ldc * int64_t(sizeof(int32_t));
  const int16_t* a3 = a + 3 * a_stride;  // rows 3-5, addressed like rows 0-2 from a
  int32_t* c3 = c + 3 * ldc;
#define FASTVLM_PAIR_ROW(address, low, high)                                                  \
  "vpbroadcastd " address ", %%ymm14\n\t"                                                     \
  "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t vpaddd %%ymm15, %%ymm" #low ", %%ymm" #low "\n\t" \
  "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t vpaddd %%ymm15, %%ymm" #high ", %%ymm" #high "\n\t"
// One pair of K: the panel's at byte `panel_offset`, the activations' at byte `a_offset` of each row.
#define FASTVLM_PAIR_STEP(panel_offset, a_offset)                            \
  "vmovdqa " panel_offset "(%[panel]), %%ymm12\n\t"                          \
  "vmovdqa " panel_offset "+32(%[panel]), %%ymm13\n\t"                       \
  FASTVLM_PAIR_ROW(a_offset "(%[a])", 0, 1)                                   \
  FASTVLM_PAIR_ROW(a_offset "(%[a], %[row_bytes], 1)", 2, 3)                  \
  FASTVLM_PAIR_ROW(a_offset "(%[a], %[row_bytes], 2)", 4, 5)                  \
  FASTVLM_PAIR_ROW(a_offset "(%[a3])", 6, 7)                                  \
  FASTVLM_PAIR_ROW(a_offset "(%[a3], %[row_bytes], 1)", 8, 9)                 \
  FASTVLM_PAIR_ROW(a_offset "(%[a3], %[row_bytes], 2)", 10, 11)
#define FASTVLM_STORE_ROW(address_low, address_high, low, high) \
  "vmovdqu %%ymm" #low ", " address_low "\n\t vmovdqu %%ymm" #high ", " address_high "\n\t"
  asm volatile(
      "vpxor %%xmm0, %%xmm0, %%xmm0\n\t vpxor %%xmm1, %%xmm1, %%xmm1\n\t vpxor %%xmm2, %%xmm2, %%xmm2\n\t"
      "vpxor %%xmm3, %%xmm3, %%xmm3\n\t vpxor %%xmm4, %%xmm4, %%xmm4\n\t vpxor %%xmm5, %%xmm5, %%xmm5\n\t"
      "vpxor %%xmm6, %%xmm6, %%xmm6\n\t vpxor %%xmm7, %%xmm7, %%xmm7\n\t vpxor %%xmm8, %%xmm8, %%xmm8\n\t"
      "vpxor %%xmm9, %%xmm9, %%xmm9\n\t vpxor %%xmm10, %%xmm10, %%xmm10\n\t vpxor %%xmm11, %%xmm11, %%xmm11\n\t"
      "sub $2, %[pairs]\n\t"
      "jl 2f\n"
      "1:\n\t"
      FASTVLM_PAIR_STEP("", "")
      FASTVLM_PAIR_STEP("64", "4")
      "add $128, %[panel]\n\t"
      "add $8, %[a]\n\t"
      "add $8, %[a3]\n\t"
      "sub $2, %[pairs]\n\t"
      "jge 1b\n"
      "2:\n\t"
      "cmp $-1, %[pairs]\n\t"  // an odd count leaves one pair
      "jne 3f\n\t"
      FASTVLM_PAIR_STEP("", "")
      "3:\n\t"
      FASTVLM_STORE_ROW("(%[c])", "32(%[c])", 0, 1)
      FASTVLM_STORE_ROW("(%[c], %[c_bytes], 1)", "32(%[c], %[c_bytes], 1)", 2, 3)
      FASTVLM_STORE_ROW("(%[c], %[c_bytes], 2)", "32(%[c], %[c_bytes], 2)", 4, 5)
      FASTVLM_STORE_ROW("(%[c3])", "32(%[c3])", 6, 7)
      FASTVLM_STORE_ROW("(%[c3], %[c_bytes], 1)", "32(%[c3], %[c_bytes], 1)", 8, 9)
      FASTVLM_STORE_ROW("(%[c3], %[c_bytes], 2)", "32(%[c3], %[c_bytes], 2)", 10, 11)
      "vzeroupper"
      : [a] "+r"(a), [a3] "+r"(a3), [panel] "+r"(panel), [pairs] "+r"(pairs)
      : [row_bytes] "r"(row_bytes), [c] "r"(c), [c3] "r"(c3), [c_bytes] "r"(c_bytes)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
        "xmm13", "xmm14", "xmm15", "memory", "cc");
#undef FASTVLM_PAIR_ROW
#undef FASTVLM_PAIR_STEP
#undef FASTVLM_STORE_ROW
}

using PanelProduct = void (*)(const int16_t*, int64_t, const int16_t*, int64_t, int32_t*, int64_t);
// The product of 1 .. kGroupRows rows (index rows - 1).
constexpr PanelProduct kPanelProducts[kGroupRows] = {multiply_panel<1>, multiply_panel<2>, multiply_panel<3>,
                                                     multiply_panel<4>, multiply_panel<5>, multiply_panel_6};

}  // namespace

void Avx2S8Weights::Free::operator()(int16_t* p) const { std::free(p); }

Avx2S8Weights::Avx2S8Weights(const int8_t* codes, int64_t N, int64_t K)
    : N_(N), K_(K), pairs_((K + 1) / 2), panels_((N + kPanelRows - 1) / kPanelRows) {
  kernels::require_avx2("Avx2S8Weights");
  if (N <= 0 || K <= 0)
    throw Error("Avx2S8Weights: a weight matrix needs rows and columns, got " + std::to_string(N) + "x" +
                std::to_string(K));
  const int64_t values = panels_ * pairs_ * 2 * kPanelRows;
  panels_data_.reset(static_cast<int16_t*>(allocate_aligned(size_t(values) * sizeof(int16_t), "int8 weight panels")));
  std::memset(panels_data_.get(), 0, size_t(values) * sizeof(int16_t));
  // Output row n, K value k: panel n / 16, pair k / 2, int16 2 · (n % 16) + k % 2.
  for (int64_t n = 0; n < N; ++n) {
    int16_t* column = panels_data_.get() + (n / kPanelRows) * pairs_ * 2 * kPanelRows + 2 * (n % kPanelRows);
    for (int64_t k = 0; k < K; ++k) column[(k / 2) * 2 * kPanelRows + k % 2] = codes[n * K + k];
  }
}

void avx2_s8_gemm(const int8_t* a, int64_t M, int64_t lda, const Avx2S8Weights& weights, S8RowBlockSink sink) {
  kernels::require_avx2("avx2_s8_gemm");
  const int64_t K = weights.cols(), pairs = weights.pairs(), padded = 2 * pairs, panels = weights.panels();
  if (lda < K) throw Error("avx2_s8_gemm: rows of A are " + std::to_string(lda) + " apart, fewer than K " + std::to_string(K));
  const int64_t ldc = panels * kPanelRows;
  const int64_t block_panels = std::max<int64_t>(1, kBlockBytes / (pairs * 2 * kPanelRows * int64_t(sizeof(int16_t))));
  thread_local ScratchBuffer widened_rows, sums;  // per thread: the tower calls this from each of its threads
  int16_t* widened = widened_rows.as<int16_t>(kStripRows * padded);
  int32_t* acc = sums.as<int32_t>(kStripRows * ldc);
  for (int64_t first = 0; first < M; first += kStripRows) {
    const int64_t count = std::min(kStripRows, M - first);
    widen_rows(a + first * lda, count, K, lda, padded, widened);
    for (int64_t block = 0; block < panels; block += block_panels)
      for (int64_t group = 0; group < count; group += kGroupRows) {
        const PanelProduct product = kPanelProducts[std::min<int64_t>(kGroupRows, count - group) - 1];
        for (int64_t p = block; p < std::min(panels, block + block_panels); ++p)
          product(widened + group * padded, padded, weights.panel(p), pairs, acc + group * ldc + p * kPanelRows, ldc);
      }
    sink(acc, ldc, first, count);
  }
}

}  // namespace fastvlm
