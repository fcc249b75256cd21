#pragma once
// The vision tower's int8 products on AVX2 (no AVX512-VNNI): C[M, N] = A[M, K] · B[N, K]ᵀ for signed 8-bit
// activation codes A and weight codes B, exact in int32. The codes are widened to 16 bits and multiplied in
// pairs by VPMADDWD (two products summed into each int32 lane, at most 2·127·127 in size): the 8-bit
// VPMADDUBSW would saturate its 16-bit pair sums on symmetric codes (oneDNN 2.6's AVX2 s8 matmul does:
// 127·127 twice gives 32767), and on AMD Zen 3 VPMADDWD + VPADDD runs 16 multiply-accumulates per
// instruction pair at ~1.7x the rate of float32 FMAs (77 vs 46 G/s per core, an inline-asm loop of 8
// independent sums). Results are handed to the caller's epilogue (kernels/amx_int8_gemm.h's S8RowBlockSink)
// strip by strip while they are in cache.
#include <cstdint>
#include <memory>

#include "kernels/amx_int8_gemm.h"

namespace fastvlm {

// Weight codes B [N, K] rearranged once, at load, for the product: panels of 16 output rows, each holding
// for every pair of K values (2q, 2q+1) the 16 rows' two codes side by side as int16, 64 bytes per pair
// (two registers of 8 rows). N is padded to 16 and K to an even count with zeros.
class Avx2S8Weights {
 public:
  Avx2S8Weights(const int8_t* codes, int64_t N, int64_t K);

  int64_t rows() const { return N_; }
  int64_t cols() const { return K_; }
  int64_t pairs() const { return pairs_; }    // K / 2, rounded up
  int64_t panels() const { return panels_; }  // N / 16, rounded up
  const int16_t* panel(int64_t index) const { return panels_data_.get() + index * pairs_ * 32; }

 private:
  struct Free {
    void operator()(int16_t* p) const;
  };
  int64_t N_, K_, pairs_, panels_;
  std::unique_ptr<int16_t, Free> panels_data_;
};

// C = A · Bᵀ for A [M, weights.cols()] with rows `lda` apart, handed to `sink` in strips of rows, in order
// (rows `stride` >= N int32 apart, the padding columns zero). Runs on the calling thread (the tower threads
// over tiles of pixels). Throws fastvlm::Error below AVX2.
void avx2_s8_gemm(const int8_t* a, int64_t M, int64_t lda, const Avx2S8Weights& weights, S8RowBlockSink sink);

}  // namespace fastvlm
