#include "kernels/amx_int8_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/tensor.h"
#include "kernels/amx_tiles.h"
#include "kernels/capabilities.h"
#include "kernels/target.h"

namespace fastvlm {
namespace {

constexpr int kTileRows = 16;
constexpr int kTileBytes = 64;                 // K values per tile row of A, 16 quadruples per row of B
constexpr int kBlockRows = 2 * kTileRows;      // a 2x2 block of result tiles: 32 pixels x 32 output rows
constexpr int64_t kPairBytes = 2 * kTileRows * kTileBytes;  // B's two tiles of one block and K step
// Weight bytes per panel of columns (amx_s8_gemm): half the 2 MB L2, leaving it room for the activation
// rows and the parked int32 results. Weights up to this size (all but the last two stages' layers) are
// one panel, and their results are handed on strip by strip.
constexpr int64_t kPanelBytes = 1024 << 10;
// Strips of rows per pass over the panels, when there are several.
constexpr int64_t kPassStrips = 8;
// Strips of 32 rows multiplied together, block by block, so that each block's weight tiles, loaded from
// L2 for the first, are in L1 for the others.
constexpr int kGroupStrips = 2;
// K steps (64 values) done in one pass over a group's blocks: all of them up to kMaxWholeSteps (the
// group's rows of A x 64 · steps bytes within 24 KB of L1), else chunks of that many, the sums parked in
// between.
constexpr int64_t kMaxWholeSteps = 12 / kGroupStrips, kChunkSteps = kMaxWholeSteps;

struct Scratch {
  ScratchBuffer staged, acc;
};
Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

void require_int8_tiles(const char* what) {
  if (!kernels::int8_tiles_available())
    throw Error(std::string(what) + ": needs AMX-INT8, which this CPU (or FASTVLM_ISA=" +
                kernels::kernel_level_name() + ") does not offer");
}

// Every tile 16 rows of 64 bytes: results 0-3, A 4-5, B 6-7. The configuration is per thread, and
// oneDNN's kernels set their own between our calls.
FASTVLM_TARGET_AMX void configure_tiles() {
  kernels::TileConfig config;
  for (int t = 0; t < 8; ++t) config.shape(t, kTileRows, kTileBytes);
  kernels::load_tile_config(config);
}

// 32 rows of A, `lda` apart, and where their int32 results go (rows `acc_stride` int32 apart).
struct Strip {
  const int8_t* a;
  int64_t lda;
  int32_t* acc;
};

// acc[32, the columns of blocks [first_block, end_block)] (+)= a · Bᵀ over K steps [first_step, end_step)
// for each of `count` strips, one 2x2 block of 16x16 result tiles at a time: the four products of a K
// step take four tile loads, two of A (from L1: the strips' chunk of K is re-read for every block) and
// two of B, from L2 for the first strip and from L1 for the second. The first chunk of K starts from
// zero, later ones from the sums parked in acc (exact: int32).
FASTVLM_TARGET_AMX void multiply_strips(const Strip* strips, int count, const AmxS8Weights& w, int64_t first_block,
                                       int64_t end_block, int64_t first_step, int64_t end_step, int64_t acc_stride) {
  const int64_t acc_bytes = acc_stride * int64_t(sizeof(int32_t));
  for (int64_t block = first_block; block < end_block; ++block) {
    for (int g = 0; g < count; ++g) {
      const int8_t* a = strips[g].a;
      const int64_t lda = strips[g].lda;
      const int8_t* a1 = a + kTileRows * lda;
      int32_t* c = strips[g].acc + block * kBlockRows;
      if (first_step == 0) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      } else {
        _tile_loadd(0, c, acc_bytes);
        _tile_loadd(1, c + kTileRows, acc_bytes);
        _tile_loadd(2, c + kTileRows * acc_stride, acc_bytes);
        _tile_loadd(3, c + kTileRows * acc_stride + kTileRows, acc_bytes);
      }
      const int8_t* b = w.tiles(block, first_step);
      for (int64_t s = first_step; s < end_step; ++s, b += kPairBytes) {
        _tile_loadd(4, a + s * kTileBytes, lda);
        _tile_loadd(5, a1 + s * kTileBytes, lda);
        _tile_loadd(6, b, kTileBytes);
        _tile_loadd(7, b + kPairBytes / 2, kTileBytes);
        _tile_dpbssd(0, 4, 6);
        _tile_dpbssd(1, 4, 7);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
      }
      _tile_stored(0, c, acc_bytes);
      _tile_stored(1, c + kTileRows, acc_bytes);
      _tile_stored(2, c + kTileRows * acc_stride, acc_bytes);
      _tile_stored(3, c + kTileRows * acc_stride + kTileRows, acc_bytes);
    }
  }
}

FASTVLM_TARGET_AMX void release_tiles() { _tile_release(); }

}  // namespace

void AmxS8Weights::Free::operator()(int8_t* p) const { std::free(p); }

AmxS8Weights::AmxS8Weights(const int8_t* codes, int64_t N, int64_t K)
    : N_(N),
      K_(K),
      padded_N_((N + kBlockRows - 1) / kBlockRows * kBlockRows),
      steps_((K + kTileBytes - 1) / kTileBytes),
      // K in chunks whose rows of A stay in L1 beside the weights streaming through: a whole strip of a
      // long K (32 x 1536 bytes fills the 48 KB) would have both operands come from L2, twice the bandwidth.
      chunk_steps_(steps_ <= kMaxWholeSteps ? steps_ : kChunkSteps) {
  require_int8_tiles("AmxS8Weights");
  if (N <= 0 || K <= 0)
    throw Error("AmxS8Weights: a weight matrix needs rows and columns, got " + std::to_string(N) + "x" +
                std::to_string(K));
  const int64_t bytes = padded_N_ * steps_ * kTileBytes;
  tiles_.reset(static_cast<int8_t*>(allocate_aligned(size_t(bytes), "int8 weight tiles")));
  std::memset(tiles_.get(), 0, size_t(bytes));
  // Output row n, K values k..k+3 (k a multiple of 4): in the pair of tiles of block n / 32 and step
  // k / 64, tile (n % 32) / 16, row (k % 64) / 4, bytes 4 · (n % 16).. (K's last quadruple may be partial).
  for (int64_t n = 0; n < N; ++n) {
    const int64_t in_block = n % kBlockRows;
    const int64_t offset = (in_block / kTileRows) * kTileRows * kTileBytes + 4 * (in_block % kTileRows);
    for (int64_t step = 0; step < steps_; ++step) {
      int8_t* pair = const_cast<int8_t*>(tiles(n / kBlockRows, step)) + offset;  // the storage is ours
      for (int64_t k = step * kTileBytes; k < std::min(K, (step + 1) * kTileBytes); k += 4)
        std::memcpy(pair + (k % kTileBytes / 4) * kTileBytes, codes + n * K + k, size_t(std::min<int64_t>(4, K - k)));
    }
  }
}

void amx_s8_gemm(const int8_t* a, int64_t M, int64_t lda, const AmxS8Weights& w, S8RowBlockSink sink) {
  require_int8_tiles("amx_s8_gemm");
  if (M <= 0) return;
  const int64_t K = w.cols(), padded_K = w.steps() * kTileBytes, padded_N = w.padded_rows();
  const int64_t strips = (M + kBlockRows - 1) / kBlockRows, blocks = padded_N / kBlockRows, steps = w.steps();
  const int64_t chunk_steps = w.chunk_steps();
  // The weights in panels of columns that stay in L2 while every strip of rows passes over them: weights
  // larger than that (the last stages' layers, several MB) would otherwise stream from L3 once per strip.
  // With more than one panel the strips' int32 results wait in `acc` for the last panel, whose pass hands
  // each strip to `sink` as it completes.
  const int64_t panel_blocks = std::clamp<int64_t>(kPanelBytes / (padded_K * kBlockRows), 1, blocks);
  const int64_t panels = (blocks + panel_blocks - 1) / panel_blocks;
  // With more than one panel, rows go through in passes of up to kPassStrips strips, so that the parked
  // results of a pass stay within a few MB however many rows there are.
  const int64_t pass_strips = panels > 1 ? kPassStrips : strips;
  Scratch& scratch = thread_scratch();
  int32_t* acc = scratch.acc.as<int32_t>((panels > 1 ? pass_strips : kGroupStrips) * kBlockRows * padded_N);
  // The tiles read each row's K padded to a multiple of 64: past a row's end lie the next row's codes,
  // which meet the weights' zero padding and add nothing. Only the last strip is copied, zero-padded,
  // first: its last row's padding (or, when M is not a multiple of 32, its missing rows) would be read
  // past the end of A.
  const int64_t last = strips - 1;
  int8_t* staged = scratch.staged.as<int8_t>(kBlockRows * padded_K);
  const int64_t last_count = M - last * kBlockRows;
  const bool stage_last = last_count < kBlockRows || padded_K > K;
  if (stage_last) {
    std::memset(staged, 0, size_t(kBlockRows * padded_K));
    for (int64_t r = 0; r < last_count; ++r)
      std::memcpy(staged + r * padded_K, a + (last * kBlockRows + r) * lda, size_t(K));
  }
  configure_tiles();
  for (int64_t pass = 0; pass < strips; pass += pass_strips) {
    const int64_t pass_end = std::min(strips, pass + pass_strips);
    for (int64_t panel = 0; panel < panels; ++panel) {
      const int64_t first_block = panel * panel_blocks, end_block = std::min(blocks, first_block + panel_blocks);
      for (int64_t group = pass; group < pass_end; group += kGroupStrips) {
        Strip group_strips[kGroupStrips];
        const int count = int(std::min<int64_t>(kGroupStrips, pass_end - group));
        for (int g = 0; g < count; ++g) {
          const int64_t strip = group + g;
          const bool staged_strip = stage_last && strip == last;
          group_strips[g] = {staged_strip ? staged : a + strip * kBlockRows * lda, staged_strip ? padded_K : lda,
                             acc + (panels > 1 ? strip - pass : g) * kBlockRows * padded_N};
        }
        for (int64_t step = 0; step < steps; step += chunk_steps)
          multiply_strips(group_strips, count, w, first_block, end_block, step, std::min(steps, step + chunk_steps),
                          padded_N);
        if (panel == panels - 1)
          for (int g = 0; g < count; ++g) {
            const int64_t first = (group + g) * kBlockRows;
            sink(group_strips[g].acc, padded_N, first, std::min<int64_t>(kBlockRows, M - first));
          }
      }
    }
  }
  release_tiles();
}

}  // namespace fastvlm
