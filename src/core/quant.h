#pragma once
// Block-quantised weight matrices (Q8_0, Q4_0) for the LLM linears, and the activation quantisation
// their integer GEMV uses.
//
// Layout of a quantised [rows, cols] matrix (cols a multiple of kQuantGroupSize = 32): each row is cut
// into groups of 32 consecutive weights; every group g of row r has one scale d = scales[r * cols/32 + g]
// (IEEE half) and 32 integer codes q, and weight = d * q. Codes and scales are two separate arrays, each
// row-major, so both stream sequentially and each maps onto a plain safetensors tensor:
//   Q8_0: codes int8 in [-127, 127], one byte per weight: codes[r * cols + c]          (tensor I8 [rows, cols])
//         d = max|w| / 127 over the group.
//   Q4_0: codes in [-8, 7] stored as q + 8 in a nibble, two weights per byte, 16 bytes per group
//         (tensor U8 [rows, cols/2]): byte j of a group holds weight j in its low nibble and weight j + 16
//         in its high nibble (so one 16-byte load splits into weights 0-15 and 16-31 with a mask and a
//         shift). d = w_m / -8 where w_m is the group's weight of largest magnitude, so that w_m itself
//         is represented exactly and the asymmetric code range is used fully.
//   scales: uint16 IEEE half [rows, cols/32] (tensor F16).
// That is the layout of checkpoints on disk. In memory, where the CPU's decode GEMV reads several rows side
// by side (kernels::quant_row_block), the loader stores the codes in blocks of kQuantRowBlock rows instead
// (QuantMatrix::row_block): within a block the rows take turns, one 64-byte chunk each (row 0's bytes 0-63,
// row 1's bytes 0-63, ..., row 0's bytes 64-127, ...), a row's shorter last chunk likewise, and a last block
// of fewer rows the same with the rows it has. The AVX-512 decode GEMV reads a block's 4 rows 64 bytes each
// per step, so a block is then one address stream; as plain rows it was four, which the hardware
// prefetchers follow poorly (AMD Zen 4, two threads, from DRAM: the Q8_0 4864 x 896 GEMV 9-12 GB/s on plain
// rows, 16-22 in blocks; the 151936 x 896 head 12-13 and 26-27). row_block 1 is the plain layout. Every
// reader finds a row's bytes through QuantMatrix::row() and works with either.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace fastvlm {

constexpr int kQuantGroupSize = 32;

// Rows per block of the in-memory layout above, and the bytes each row contributes per turn.
constexpr int kQuantRowBlock = 4;
constexpr int64_t kQuantChunkBytes = 64;

// Bytes of codes per row of `cols` weights (type Q8_0 or Q4_0, as everywhere below).
inline int64_t quant_row_bytes(WeightType type, int64_t cols) { return type == WeightType::Q8_0 ? cols : cols / 2; }

// Where one row's codes lie: its 64-byte chunks `chunk_stride` bytes apart from `first`, except a shorter
// last chunk at `last`. A group (16 or 32 bytes, aligned) never straddles two chunks.
struct RowCodes {
  const uint8_t* first;
  int64_t chunk_stride;
  int64_t full_chunks;
  const uint8_t* last;

  // Byte `byte` of the row; the bytes after it up to the end of its chunk follow it.
  const uint8_t* at(int64_t byte) const {
    const int64_t chunk = byte / kQuantChunkBytes;
    return (chunk < full_chunks ? first + chunk * chunk_stride : last) + byte % kQuantChunkBytes;
  }
};

// A read-only view of a quantised matrix, its codes in blocks of `row_block` rows (see above).
struct QuantMatrix {
  WeightType type = WeightType::Q8_0;
  const uint8_t* codes = nullptr;
  const uint16_t* scales = nullptr;
  int64_t rows = 0, cols = 0;
  int64_t row_block = 1;

  int64_t groups_per_row() const { return cols / kQuantGroupSize; }
  RowCodes row(int64_t r) const;
  // The codes of the rows from `first` on, one after another: `first` must start a block.
  const uint8_t* codes_from_row(int64_t first) const { return codes + first * quant_row_bytes(type, cols); }
  const uint16_t* row_scales(int64_t row) const { return scales + row * groups_per_row(); }
};

// Row r of `rows` rows of `row_bytes` bytes each, stored from `codes` in blocks of `row_block` rows.
inline RowCodes block_row(const uint8_t* codes, int64_t rows, int64_t row_bytes, int64_t row_block, int64_t r) {
  const int64_t block_first = r / row_block * row_block;
  const int64_t block_rows = std::min(row_block, rows - block_first), in_block = r - block_first;
  const int64_t full_chunks = row_bytes / kQuantChunkBytes;
  const uint8_t* block = codes + block_first * row_bytes;
  return {block + in_block * kQuantChunkBytes, kQuantChunkBytes * block_rows, full_chunks,
          block + full_chunks * kQuantChunkBytes * block_rows + in_block * (row_bytes - full_chunks * kQuantChunkBytes)};
}

inline RowCodes QuantMatrix::row(int64_t r) const {
  return block_row(codes, rows, quant_row_bytes(type, cols), row_block, r);
}

// Rearranges the plain row-major codes of `rows` rows in place into blocks of `row_block` rows (the in-memory
// layout above). `rows` need not be a multiple of it: the last block has the rows left.
void block_rows_in_place(uint8_t* codes, int64_t rows, int64_t row_bytes, int64_t row_block);

// One of several products of a shared input (a layer's q/k/v or gate/up projections): y = x · dequant(W)ᵀ
// (+ bias), y [rows, weights->rows]. The prefill GEMMs take a list of them (kernels/qgemm.h,
// kernels/quant_bf16_gemm.h) and prepare x once for all.
struct QuantProduct {
  const QuantMatrix* weights;
  const float* bias;  // or null
  float* y;
};

// Signed code of weight j (0..31) of a group whose codes start at `group`.
inline int quant_code(WeightType type, const uint8_t* group, int j) {
  if (type == WeightType::Q8_0) return int8_t(group[j]);
  constexpr int half = kQuantGroupSize / 2;
  return j < half ? (group[j] & 0xf) - 8 : (group[j - half] >> 4) - 8;
}

// float -> IEEE half, round to nearest even (the other direction is f16_to_f32 in core/dtype.h).
uint16_t f32_to_f16(float value);

// Quantises `rows` x `cols` floats (cols % 32 == 0) into `codes` (quant_row_bytes per row) and `scales`
// (cols/32 per row). Each scale is rounded to half first and the codes computed with the rounded scale.
// Finite weights only. quantize_matrix_row does one row on the calling thread. The reference for
// kernels/weight_quant.h, which gives the same bits faster.
void quantize_matrix_row(WeightType type, const float* weights, int64_t cols, uint8_t* codes, uint16_t* scales);
void quantize_matrix(WeightType type, const float* weights, int64_t rows, int64_t cols, uint8_t* codes,
                     uint16_t* scales);

}  // namespace fastvlm
