#include "kernels/quant_bf16_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/capabilities.h"
#include "kernels/dequantize.h"
#include "kernels/amx_tiles.h"
#include "kernels/simd_mask.h"
#include "kernels/simd_transpose.h"
#include "kernels/target.h"

// GCC 12 flags the deliberately undefined pass-through operand inside its own AVX-512 unpack intrinsics
// (the transposes of kernels/simd_transpose.h).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastvlm {
namespace {

// The product is computed transposed, yᵀ = W · xᵀ, so that the weights, expanded to bfloat16, are the
// tiles' left operand as they are: a tile is 16 weight rows x 32 K values, expanded in tile order
// (kernels/dequantize.h dequantize_rows_bf16_tiles) so that each tile is 1 KB in one piece. The activations become the right operand, which TDPBF16PS wants as K pairs: row r of a tile
// holds, for each of 16 activation rows, its values at K 2r and 2r+1 (one 32-bit pair). Packing them costs
// one pass over x per call; the 16x16 float results are transposed when stored.
constexpr int kTileRows = 16;
constexpr int kTileK = 32;            // bfloat16 values per tile row (64 bytes)
constexpr int kBlockRows = 2 * kTileRows;  // a 2x2 block of result tiles: 32 weight rows x 32 activation rows
static_assert(kBlockRows % kQuantRowBlock == 0, "a panel starts a block of stored rows (codes_from_row)");
// Weight rows expanded per panel, at most: 128 x K bfloat16 (1.2 MB for K = 4864) stays in the core's L2
// while every block of activation rows passes over it.
constexpr int64_t kMaxPanelRows = 128;
// K steps per chunk of the product loop: 32 activation rows x 256 K values in bfloat16 = 16 KB of L1.
constexpr int64_t kChunkSteps = 8;

struct Scratch {
  ScratchBuffer x_pairs, panel;
};
Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

// x_pairs[block][step][r][j] = the bfloat16 pair of activation row 16·block + j at K 32·step + 2r, +1;
// zero past the last row. Converted and reordered in one pass: the 16 rows' 32 values of a step, rounded
// to 16 pairs each, are a 16 x 16 matrix of pairs to transpose.
FASTVLM_TARGET_AMX void pack_activation_block(const float* x, int64_t rows, int64_t K, int64_t block,
                                             uint32_t* x_pairs) {
  const int64_t steps = K / kTileK, first = block * kTileRows;
  const int64_t valid = std::clamp<int64_t>(rows - first, 0, kTileRows);
  uint32_t* out = x_pairs + block * steps * kTileRows * kTileRows;
  for (int64_t step = 0; step < steps; ++step, out += kTileRows * kTileRows) {
    __m512i pairs[kTileRows];
    for (int64_t j = 0; j < kTileRows; ++j) {
      const float* row = x + (first + j) * K + step * kTileK;
      pairs[j] = j < valid ? (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + 16), _mm512_loadu_ps(row))
                           : _mm512_setzero_si512();
    }
    simd::transpose_16x16_epi32(pairs);
    for (int64_t r = 0; r < kTileRows; ++r) _mm512_storeu_si512(out + r * kTileRows, pairs[r]);
  }
}

// The OpenMP loops live outside the target-attributed functions: clang outlines a parallel region into a
// function of its own, without the attribute, where 512-bit values and tile instructions are refused.
void pack_activation_pairs(const float* x, int64_t rows, int64_t padded_rows, int64_t K, uint32_t* x_pairs) {
  const int64_t blocks = padded_rows / kTileRows;
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < blocks; ++block) pack_activation_block(x, rows, K, block, x_pairs);
}

// Adds the bias and writes one 16x16 result tile, stored as result[weight row i][activation row j], into
// y[row_first + j][col_first + i] for the rows and columns that exist (transposed in registers).
FASTVLM_TARGET_AMX void store_transposed(const float* result, int64_t row_first, int64_t rows, int64_t col_first,
                                        int64_t N, const float* bias, float* y) {
  if (col_first >= N) return;
  const __mmask16 present = simd::first_lanes(N - col_first);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(present, bias + col_first) : _mm512_setzero_ps();
  __m512i tile[kTileRows];
  for (int64_t i = 0; i < kTileRows; ++i) tile[i] = _mm512_loadu_si512(result + i * kTileRows);
  simd::transpose_16x16_epi32(tile);
  const int64_t count = std::min<int64_t>(kTileRows, rows - row_first);
  for (int64_t j = 0; j < count; ++j)
    _mm512_mask_storeu_ps(y + (row_first + j) * N + col_first, present, _mm512_add_ps(_mm512_castsi512_ps(tile[j]), b));
}

// The stored codes and scales of the panel a thread expands next, pulled into its L2 cache a few lines per
// block of tile products: in the profile the expansion stalls on loading the codes (from L3 or DRAM).
// (Expanding the next panel itself between the tile products was slower: the stores crowd the L1.)
class PanelPrefetch {
 public:
  PanelPrefetch(const QuantMatrix& w, int64_t first, int64_t count, int64_t blocks) {
    if (count <= 0) return;
    const int64_t row_bytes = quant_row_bytes(w.type, w.cols);
    ranges_[0] = {reinterpret_cast<const char*>(w.codes_from_row(first)), count * row_bytes};
    ranges_[1] = {reinterpret_cast<const char*>(w.row_scales(first)), count * w.groups_per_row() * 2};
    const int64_t lines = (ranges_[0].bytes + ranges_[1].bytes) / 64 + 2;
    lines_per_block_ = (lines + blocks - 1) / std::max<int64_t>(blocks, 1);
  }
  FASTVLM_TARGET_AMX void next_block() {
    for (int64_t i = 0; i < lines_per_block_ && range_ < 2; ++i) {
      Range& range = ranges_[range_];
      _mm_prefetch(range.begin + offset_, _MM_HINT_T1);
      offset_ += 64;
      if (offset_ >= range.bytes) offset_ = 0, ++range_;
    }
  }

 private:
  struct Range {
    const char* begin = nullptr;
    int64_t bytes = 0;
  };
  Range ranges_[2];
  int range_ = 0;
  int64_t offset_ = 0, lines_per_block_ = 0;
};

// y[:, first, first + count) for the weight rows of one expanded panel (rows past `count` are zero).
// The tile loads, not the products, bound this loop (a 1 KB TILELOADD from L1 takes about as long as two
// TDPBF16PS on the AMX Xeons measured, and a 2x2 block needs one load per product): K is walked in
// chunks, and each chunk of 32 activation rows (16 KB) serves every 32-row block of the panel from L1,
// the result tiles parked in `sums` (in L1) between chunks. Float32 sums, so parking them is exact.
FASTVLM_TARGET_AMX void multiply_panel(const uint16_t* panel, int64_t padded_count, const uint32_t* x_pairs,
                                      int64_t rows, int64_t padded_rows, int64_t K, int64_t first, int64_t N,
                                      const float* bias, float* y, PanelPrefetch& prefetch) {
  const int64_t steps = K / kTileK, tile_words = kTileRows * kTileRows;
  alignas(64) float sums[kMaxPanelRows / kBlockRows][4][kTileRows * kTileRows];
  for (int64_t m = 0; m < padded_rows; m += kBlockRows) {
    const uint32_t* x0 = x_pairs + (m / kTileRows) * steps * tile_words;
    const uint32_t* x1 = x0 + steps * tile_words;
    for (int64_t chunk = 0; chunk < steps; chunk += kChunkSteps) {
      const int64_t chunk_end = std::min(steps, chunk + kChunkSteps);
      for (int64_t n = 0; n < padded_count; n += kBlockRows) {
        float(*block)[kTileRows * kTileRows] = sums[n / kBlockRows];
        if (chunk == 0) {
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
        } else {
          _tile_loadd(0, block[0], 64);
          _tile_loadd(1, block[1], 64);
          _tile_loadd(2, block[2], 64);
          _tile_loadd(3, block[3], 64);
        }
        prefetch.next_block();
        const uint16_t* w0 = panel + n * K;
        const uint16_t* w1 = w0 + kTileRows * K;
        for (int64_t s = chunk; s < chunk_end; ++s) {
          _tile_loadd(4, w0 + s * 2 * tile_words, 64);
          _tile_loadd(5, w1 + s * 2 * tile_words, 64);
          _tile_loadd(6, x0 + s * tile_words, 64);
          _tile_loadd(7, x1 + s * tile_words, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_dpbf16ps(1, 4, 7);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, block[0], 64);
        _tile_stored(1, block[1], 64);
        _tile_stored(2, block[2], 64);
        _tile_stored(3, block[3], 64);
      }
    }
    for (int64_t n = 0; n < padded_count; n += kBlockRows) {
      const float(*block)[kTileRows * kTileRows] = sums[n / kBlockRows];
      const int64_t col = first + n;
      store_transposed(block[0], m, rows, col, N, bias, y);
      store_transposed(block[1], m + kTileRows, rows, col, N, bias, y);
      store_transposed(block[2], m, rows, col + kTileRows, N, bias, y);
      store_transposed(block[3], m + kTileRows, rows, col + kTileRows, N, bias, y);
    }
  }
}

// Weight rows per panel: up to kMaxPanelRows, fewer where that leaves a thread without its share of
// panels (a 128-row k_proj still splits across threads).
int64_t panel_rows(int64_t N) {
  const int64_t share = N / (4 * int64_t(omp_get_max_threads())) / kBlockRows * kBlockRows;
  return std::clamp<int64_t>(share, kBlockRows, kMaxPanelRows);
}

// Every tile 16 rows of 64 bytes. The configuration is per thread, and oneDNN's kernels set their own
// between our calls.
FASTVLM_TARGET_AMX void configure_tiles() {
  kernels::TileConfig config;
  for (int t = 0; t < 8; ++t) config.shape(t, kTileRows, 64);
  kernels::load_tile_config(config);
}

FASTVLM_TARGET_AMX void release_tiles() { _tile_release(); }

void multiply_panels(const uint32_t* x_pairs, int64_t rows, int64_t padded_rows, const QuantMatrix& w,
                     const float* bias, float* y) {
  const int64_t K = w.cols, N = w.rows, step = panel_rows(N), panels = (N + step - 1) / step;
  const int64_t chunks = (K / kTileK + kChunkSteps - 1) / kChunkSteps;
#pragma omp parallel
  {
    configure_tiles();
    uint16_t* panel = thread_scratch().panel.as<uint16_t>(kMaxPanelRows * K);
    const int64_t threads = omp_get_num_threads();
    // Round robin, so that a thread knows the panel it takes next (p + threads) and can prefetch it.
#pragma omp for schedule(static, 1)
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t first = p * step, count = std::min(step, N - first);
      const int64_t padded_count = (count + kBlockRows - 1) / kBlockRows * kBlockRows;
      // Zero rows past `count`: the rest of a partial tile and the tiles padding the panel to 32 rows.
      const int64_t full_tiles_end = count / kTileRows * kTileRows * K;
      std::memset(panel + full_tiles_end, 0, sizeof(uint16_t) * size_t(padded_count * K - full_tiles_end));
      dequantize_rows_bf16_tiles(w, first, count, panel);
      const int64_t next = (p + threads) * step;
      PanelPrefetch prefetch(w, next, std::min(step, N - next),
                             padded_rows / kBlockRows * chunks * (padded_count / kBlockRows));
      multiply_panel(panel, padded_count, x_pairs, rows, padded_rows, K, first, N, bias, y, prefetch);
    }
    release_tiles();
  }
}

}  // namespace

void linear_quant_bf16(const float* x, int64_t rows, const QuantMatrix& w, const float* bias, float* y) {
  const QuantProduct product{&w, bias, y};
  linear_quant_bf16(x, rows, std::span(&product, 1));
}

void linear_quant_bf16(const float* x, int64_t rows, std::span<const QuantProduct> products) {
  if (!kernels::amx_bf16_available())
    throw Error("linear_quant_bf16: needs AMX-BF16, which this CPU (or FASTVLM_ISA=" + kernels::kernel_level_name() +
                ") does not offer");
  if (rows <= 0 || products.empty()) return;
  const int64_t K = products[0].weights->cols, padded_rows = (rows + kBlockRows - 1) / kBlockRows * kBlockRows;
  for (const QuantProduct& product : products)
    if (product.weights->cols != K)
      throw Error("internal: linear_quant_bf16 on one input of " + std::to_string(K) + " columns, a weight has " +
                  std::to_string(product.weights->cols));
  uint32_t* x_pairs = thread_scratch().x_pairs.as<uint32_t>(padded_rows * K / 2);
  pack_activation_pairs(x, rows, padded_rows, K, x_pairs);
  for (const QuantProduct& product : products)
    if (product.weights->rows > 0) multiply_panels(x_pairs, rows, padded_rows, *product.weights, product.bias, product.y);
}

}  // namespace fastvlm
