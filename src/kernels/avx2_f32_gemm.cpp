#include "kernels/avx2_f32_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/capabilities.h"
#include "kernels/simd_gelu.h"
#include "kernels/target.h"

namespace fastvlm {
// Named, so that profiles (bench/vision_profile.sh) can tell this product's parts from the other kernels'.
namespace avx2_f32 {
namespace {

constexpr int64_t kPanelColumns = 16;  // two registers of 8 floats
// Rows per register block: 6 x 2 sums, the panel's two registers and a broadcast fill 15 of the 16 ymm
// registers; each k then loads 2 weight vectors and broadcasts 6 activations for 12 FMAs.
constexpr int kGroupRows = 6;
// K values per pass over a panel: its 16 KB slice stays in the 32 KB L1 while every row group of a strip
// multiplies it. Passes after the first add to the sums they left in C.
constexpr int64_t kDepthBlock = 256;
// Rows per strip, at most: up to 144 rows of a K slice (144 KB packed) stay in L2 while all of the item's
// panels pass over them, and each panel slice, fetched once per strip, serves up to 24 row groups from L1.
constexpr int64_t kMaxStripRows = 144;
// Below this many multiply-accumulates a call stays on one thread: waking the team costs more.
constexpr int64_t kMinWorkToSplit = int64_t(1) << 20;

// A group of kGroupRows rows of one K slice of A, packed: for each k, the rows' 6 values side by side, so
// that the kernel's broadcasts read one sequential stream (a first version reading the 6 rows in place ran
// BM_PointwiseGemmF32Packed's shapes at 54-67 GFLOP/s, AMD Zen 3, one thread). Rows past the end of A are zeros. Four k at a time: rows 0-3 transposed as a 4 x 4
// block, rows 4-5 interleaved in pairs.
FASTVLM_TARGET_AVX2 void pack_group(const float* a, int64_t lda, int64_t rows, int64_t depth, float* packed) {
  const float* row[kGroupRows];
  alignas(16) static const float kZeros[4] = {};
  for (int64_t r = 0; r < kGroupRows; ++r) row[r] = r < rows ? a + r * lda : kZeros;
  int64_t k = 0;
  for (; k + 4 <= depth; k += 4, packed += 4 * kGroupRows) {
    const auto load = [&](int r) { return _mm_loadu_ps(row[r] + (r < rows ? k : 0)); };  // padding: the zeros
    __m128 r0 = load(0), r1 = load(1), r2 = load(2), r3 = load(3);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);  // r_j: rows 0-3 at k + j
    const __m128 r4 = load(4), r5 = load(5);
    const __m128 pairs_low = _mm_unpacklo_ps(r4, r5), pairs_high = _mm_unpackhi_ps(r4, r5);  // rows 4-5 at k, k+1 / k+2, k+3
    _mm_storeu_ps(packed, r0);
    _mm_storel_pi(reinterpret_cast<__m64*>(packed + 4), pairs_low);
    _mm_storeu_ps(packed + 6, r1);
    _mm_storeh_pi(reinterpret_cast<__m64*>(packed + 10), pairs_low);
    _mm_storeu_ps(packed + 12, r2);
    _mm_storel_pi(reinterpret_cast<__m64*>(packed + 16), pairs_high);
    _mm_storeu_ps(packed + 18, r3);
    _mm_storeh_pi(reinterpret_cast<__m64*>(packed + 22), pairs_high);
  }
  for (; k < depth; ++k, packed += kGroupRows)
    for (int64_t r = 0; r < kGroupRows; ++r) packed[r] = r < rows ? row[r][k] : 0.0f;
}

// Where a 6 x 16 block's sums start from and go to: `from` rows `from_stride` floats apart (0: the same 16
// values for every row, a bias or zeros), `to` rows `to_stride` apart.
struct BlockEnds {
  const float* from;
  int64_t from_stride;
  float* to;
  int64_t to_stride;
};

// to[6][16] = from[6][16] + the packed group at `a` times `depth` (>= 1) k of the panel at `panel`.
// In assembly: GCC 12 keeps the 12 sums of the same loop in intrinsics in registers but also stores all 12
// to the stack after every k (two stores per FMA pair). Registers: sums ymm0-11 (row r: ymm 2r, 2r+1), the
// panel's two vectors ymm12-13, the broadcast activation ymm14.
FASTVLM_TARGET_AVX2 void multiply_block(const float* a, const float* panel, int64_t depth, const BlockEnds& ends) {
  const int64_t from_bytes = ends.from_stride * int64_t(sizeof(float)), to_bytes = ends.to_stride * int64_t(sizeof(float));
  const float* from3 = ends.from + 3 * ends.from_stride;  // rows 3-5, addressed like rows 0-2
  float* to = ends.to;
  float* to3 = ends.to + 3 * ends.to_stride;
#define FASTVLM_F32_ROW(a_offset, low, high)                 \
  "vbroadcastss " a_offset "(%[a]), %%ymm14\n\t"             \
  "vfmadd231ps %%ymm12, %%ymm14, %%ymm" #low "\n\t"          \
  "vfmadd231ps %%ymm13, %%ymm14, %%ymm" #high "\n\t"
// One k: the panel's 16 weights at byte `panel_offset`, the group's 6 activations from byte `a_offset`.
#define FASTVLM_F32_STEP(panel_offset, a_offset)      \
  "vmovaps " panel_offset "(%[panel]), %%ymm12\n\t"   \
  "vmovaps " panel_offset "+32(%[panel]), %%ymm13\n\t" \
  FASTVLM_F32_ROW(a_offset "+0", 0, 1)                 \
  FASTVLM_F32_ROW(a_offset "+4", 2, 3)                 \
  FASTVLM_F32_ROW(a_offset "+8", 4, 5)                 \
  FASTVLM_F32_ROW(a_offset "+12", 6, 7)                \
  FASTVLM_F32_ROW(a_offset "+16", 8, 9)                \
  FASTVLM_F32_ROW(a_offset "+20", 10, 11)
// Row r of a block at `base` / `base3` (rows 3-5), rows `stride` bytes apart.
#define FASTVLM_F32_ROWS(op, base, base3, stride)                                                             \
  op "(%[" base "]), %%ymm0\n\t " op "32(%[" base "]), %%ymm1\n\t"                                          \
  op "(%[" base "], %[" stride "], 1), %%ymm2\n\t " op "32(%[" base "], %[" stride "], 1), %%ymm3\n\t"     \
  op "(%[" base "], %[" stride "], 2), %%ymm4\n\t " op "32(%[" base "], %[" stride "], 2), %%ymm5\n\t"     \
  op "(%[" base3 "]), %%ymm6\n\t " op "32(%[" base3 "]), %%ymm7\n\t"                                        \
  op "(%[" base3 "], %[" stride "], 1), %%ymm8\n\t " op "32(%[" base3 "], %[" stride "], 1), %%ymm9\n\t"   \
  op "(%[" base3 "], %[" stride "], 2), %%ymm10\n\t " op "32(%[" base3 "], %[" stride "], 2), %%ymm11\n\t"
  asm volatile(
      FASTVLM_F32_ROWS("vmovups ", "from", "from3", "from_bytes")
      "sub $2, %[depth]\n\t"
      "jl 2f\n"
      "1:\n\t"
      FASTVLM_F32_STEP("", "")
      FASTVLM_F32_STEP("64", "24")
      "add $128, %[panel]\n\t"
      "add $48, %[a]\n\t"
      "sub $2, %[depth]\n\t"
      "jge 1b\n"
      "2:\n\t"
      "cmp $-1, %[depth]\n\t"  // an odd depth leaves one k
      "jne 3f\n\t"
      FASTVLM_F32_STEP("", "")
      "3:\n\t"
      "vmovups %%ymm0, (%[to])\n\t vmovups %%ymm1, 32(%[to])\n\t"
      "vmovups %%ymm2, (%[to], %[to_bytes], 1)\n\t vmovups %%ymm3, 32(%[to], %[to_bytes], 1)\n\t"
      "vmovups %%ymm4, (%[to], %[to_bytes], 2)\n\t vmovups %%ymm5, 32(%[to], %[to_bytes], 2)\n\t"
      "vmovups %%ymm6, (%[to3])\n\t vmovups %%ymm7, 32(%[to3])\n\t"
      "vmovups %%ymm8, (%[to3], %[to_bytes], 1)\n\t vmovups %%ymm9, 32(%[to3], %[to_bytes], 1)\n\t"
      "vmovups %%ymm10, (%[to3], %[to_bytes], 2)\n\t vmovups %%ymm11, 32(%[to3], %[to_bytes], 2)\n\t"
      "vzeroupper"
      : [a] "+r"(a), [panel] "+r"(panel), [depth] "+r"(depth)
      : [from] "r"(ends.from), [from3] "r"(from3), [from_bytes] "r"(from_bytes), [to] "r"(to), [to3] "r"(to3),
        [to_bytes] "r"(to_bytes)
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
        "xmm13", "xmm14", "memory", "cc");
#undef FASTVLM_F32_ROW
#undef FASTVLM_F32_STEP
#undef FASTVLM_F32_ROWS
}

// After the last K slice: adds `bias` (16 values, or null) to, and then applies GELU (when `gelu`) on, `rows`
// rows of 16 at `block` (`stride` floats apart).
FASTVLM_TARGET_AVX2 void finish_block(float* block, int64_t stride, int64_t rows, const float* bias, bool gelu) {
  for (int64_t r = 0; r < rows; ++r)
    for (int half = 0; half < 2; ++half) {
      float* values = block + r * stride + 8 * half;
      __m256 v = _mm256_loadu_ps(values);
      if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + 8 * half));
      if (gelu) v = simd::gelu_avx2(v);
      _mm256_storeu_ps(values, v);
    }
}

// One item of the product: rows [first_row, first_row + rows) by panels [first_panel, end_panel), over all of
// K slice by slice; the first slice's sums start from the bias (AddToOutput: from C, the bias added after the
// last), later ones from the sums the slice before left in C. Blocks that reach past C's last row or its N
// columns go through a staging block, so that C is never read or written outside the product.
void multiply_item(const float* a, int64_t lda, const Avx2F32Weights& weights, float* c, int64_t ldc,
                   const float* bias, Epilogue epilogue, int64_t first_row, int64_t rows, int64_t first_panel,
                   int64_t end_panel) {
  const int64_t K = weights.cols(), N = weights.rows();
  const int64_t groups = (rows + kGroupRows - 1) / kGroupRows;
  thread_local ScratchBuffer packed_rows;  // per thread: the tower calls this from each of its threads
  float* packed = packed_rows.as<float>(groups * kGroupRows * std::min(kDepthBlock, K));
  alignas(32) float staged[kGroupRows * kPanelColumns] = {};  // rows past a short group's stay finite
  for (int64_t k0 = 0; k0 < K; k0 += kDepthBlock) {
    const int64_t depth = std::min(kDepthBlock, K - k0);
    const bool first = k0 == 0, last = k0 + depth == K;
    for (int64_t g = 0; g < groups; ++g)
      pack_group(a + (first_row + g * kGroupRows) * lda + k0, lda, std::min<int64_t>(kGroupRows, rows - g * kGroupRows),
                 depth, packed + g * kGroupRows * depth);
    for (int64_t p = first_panel; p < end_panel; ++p) {
      const int64_t column = p * kPanelColumns, columns = std::min(kPanelColumns, N - column);
      alignas(32) float padded_bias[kPanelColumns] = {};  // zeros without a bias
      if (bias) std::memcpy(padded_bias, bias + column, size_t(columns) * sizeof(float));
      const bool from_c = !first || epilogue == Epilogue::AddToOutput;
      const float* bias_after = last && epilogue == Epilogue::AddToOutput && bias ? padded_bias : nullptr;
      const bool gelu = last && epilogue == Epilogue::Gelu;
      const float* panel = weights.panel(p) + k0 * kPanelColumns;
      // The next panel slice (or the next K slice's first) is brought from L3 into L2 a part per row group
      // while this one computes: fetched on demand by the first group, it stalls that group's loads. A
      // panel's k is one 64-byte line.
      const bool next_in_slice = p + 1 < end_panel;
      const float* next = next_in_slice ? panel + K * kPanelColumns : weights.panel(first_panel) + (k0 + depth) * kPanelColumns;
      const int64_t next_lines = next_in_slice ? depth : std::min(kDepthBlock, K - k0 - depth);
      const int64_t lines_per_group = (next_lines + groups - 1) / groups;
      for (int64_t g = 0; g < groups; ++g) {
        for (int64_t line = g * lines_per_group; line < std::min(next_lines, (g + 1) * lines_per_group); ++line)
          _mm_prefetch(reinterpret_cast<const char*>(next + line * kPanelColumns), _MM_HINT_T1);
        const int64_t count = std::min<int64_t>(kGroupRows, rows - g * kGroupRows);
        float* c_rows = c + (first_row + g * kGroupRows) * ldc + column;
        // The next group's block of C, which a strip's worth of rows leaves in L3 between K slices.
        if (from_c && g + 1 < groups)
          for (int64_t r = 0; r < std::min<int64_t>(kGroupRows, rows - (g + 1) * kGroupRows); ++r) {
            const char* row = reinterpret_cast<const char*>(c_rows + (kGroupRows + r) * ldc);
            _mm_prefetch(row, _MM_HINT_T0);
            _mm_prefetch(row + 60, _MM_HINT_T0);
          }
        const bool whole = count == kGroupRows && columns == kPanelColumns;
        if (!whole && from_c)
          for (int64_t r = 0; r < count; ++r)
            std::memcpy(staged + r * kPanelColumns, c_rows + r * ldc, size_t(columns) * sizeof(float));
        float* to = whole ? c_rows : staged;
        const int64_t to_stride = whole ? ldc : kPanelColumns;
        const BlockEnds ends = from_c ? BlockEnds{to, to_stride, to, to_stride} : BlockEnds{padded_bias, 0, to, to_stride};
        multiply_block(packed + g * kGroupRows * depth, panel, depth, ends);
        if (bias_after || gelu) finish_block(to, to_stride, count, bias_after, gelu);
        if (!whole)
          for (int64_t r = 0; r < count; ++r)
            std::memcpy(c_rows + r * ldc, staged + r * kPanelColumns, size_t(columns) * sizeof(float));
      }
    }
  }
}

}  // namespace
}  // namespace avx2_f32

using namespace avx2_f32;

void Avx2F32Weights::Free::operator()(float* p) const { std::free(p); }

Avx2F32Weights::Avx2F32Weights(const float* weights, int64_t N, int64_t K)
    : N_(N), K_(K), panels_((N + kPanelColumns - 1) / kPanelColumns) {
  kernels::require_avx2("Avx2F32Weights");
  if (N <= 0 || K <= 0)
    throw Error("Avx2F32Weights: a weight matrix needs rows and columns, got " + std::to_string(N) + "x" +
                std::to_string(K));
  const int64_t values = panels_ * K * kPanelColumns;
  data_.reset(static_cast<float*>(allocate_aligned(size_t(values) * sizeof(float), "float32 weight panels")));
  std::memset(data_.get(), 0, size_t(values) * sizeof(float));
  // Output column n, K value k: panel n / 16, line k, float n % 16.
  for (int64_t n = 0; n < N; ++n) {
    float* column = data_.get() + (n / kPanelColumns) * K * kPanelColumns + n % kPanelColumns;
    for (int64_t k = 0; k < K; ++k) column[k * kPanelColumns] = weights[n * K + k];
  }
}

void avx2_f32_gemm(const float* a, int64_t M, int64_t lda, const Avx2F32Weights& weights, float* c, int64_t ldc,
                   const float* bias, Epilogue epilogue) {
  kernels::require_avx2("avx2_f32_gemm");
  const int64_t N = weights.rows(), K = weights.cols();
  if (M <= 0) return;
  if (lda < K || ldc < N)
    throw Error("avx2_f32_gemm: rows of A are " + std::to_string(lda) + " apart and of C " + std::to_string(ldc) +
                ", fewer than K " + std::to_string(K) + " or N " + std::to_string(N));
  const bool threaded = !omp_in_parallel() && omp_get_max_threads() > 1 && M * N * K >= kMinWorkToSplit;
  // Items: strips of rows by chunks of panels, a chunk per thread when threaded (so that few rows still
  // split), each chunk's panels passing over its strip's rows.
  const int64_t panels = weights.panels(), strips = (M + kMaxStripRows - 1) / kMaxStripRows;
  // Strips of equal size (a multiple of the row group): 128 rows are one strip, not 120 and 8.
  const int64_t strip_rows = ((M + strips - 1) / strips + kGroupRows - 1) / kGroupRows * kGroupRows;
  const int64_t chunks = threaded ? std::min<int64_t>(panels, omp_get_max_threads()) : 1;
#pragma omp parallel for collapse(2) schedule(static) if (threaded)
  for (int64_t strip = 0; strip < strips; ++strip)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t first_row = strip * strip_rows;
      if (first_row >= M) continue;
      multiply_item(a, lda, weights, c, ldc, bias, epilogue, first_row, std::min(strip_rows, M - first_row),
                    panels * chunk / chunks, panels * (chunk + 1) / chunks);
    }
}

}  // namespace fastvlm
