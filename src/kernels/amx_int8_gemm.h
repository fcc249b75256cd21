#pragma once
// The vision tower's int8 products on AMX tiles: C[M, N] = A[M, K] · B[N, K]ᵀ for signed 8-bit activation
// codes A and weight codes B, exact in int32 (TDPBSSD multiplies s8 by s8, so the codes are used as they
// are), each block of 32 result rows handed to the caller's epilogue while it is still in cache: the
// tower's epilogues (kernels/int8_epilogue.h) dequantise, requantise or add into the residual 32 rows at a
// time, and the int32 matrix is never written whole (with weights of at most 1 MB; larger ones are
// multiplied in panels of columns, the results of up to 256 rows parked until the last panel).
// On the tower's shapes, one thread (bench/int8_gemm_rates.sh), this runs at 1.3-2x the rate of oneDNN
// 2.6's AMX int8 matmul where the weights fit in L2 (stages 0-2: 35-58% of the tdpbssd peak; 5x on a
// whole 4096-row map), at about its rate (1.0-1.2x, ~30%) on the last stages' weights of 2-9 MB, which
// stream from L3 for every 128-row tile. The short-K products are bound by storing their result tiles.
// Needs int8_tiles_available() (kernels/capabilities.h); where that is false (no AMX: Zen 4/5, or
// FASTVLM_ISA below amx) the tower keeps oneDNN's matmul_s8 (kernels/gemm.h), whose sums are the same
// integers.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>

namespace fastvlm {

// Weight codes B [N, K] rearranged once, at load, into the tiles TDPBSSD takes as its right operand: for
// each 32 output rows and each 64 values of K (a step), two 1 KB tiles (16 output rows each) whose row q
// holds, for each of the 16 output rows, its four codes at K 4q..4q+3. N is padded to 32 and K to 64 with
// zeros. The product walks K in chunks of chunk_steps() steps, each chunk over every 32 output rows in
// turn, so the pairs of tiles are stored in that order: chunk by chunk, within one 32 rows after another,
// within those step by step. A pass of the product then reads the weights front to back.
class AmxS8Weights {
 public:
  AmxS8Weights(const int8_t* codes, int64_t N, int64_t K);

  int64_t rows() const { return N_; }
  int64_t cols() const { return K_; }
  int64_t padded_rows() const { return padded_N_; }  // N rounded up to 32
  int64_t steps() const { return steps_; }           // K / 64, rounded up
  int64_t chunk_steps() const { return chunk_steps_; }
  // The two tiles of output rows 32·block.. at K step `step`, 2 KB in one piece; the chunk's next step
  // follows them.
  const int8_t* tiles(int64_t block, int64_t step) const {
    const int64_t first = step / chunk_steps_ * chunk_steps_, length = std::min(chunk_steps_, steps_ - first);
    return tiles_.get() + (first * (padded_N_ / 32) + block * length + step - first) * 2048;
  }

 private:
  struct Free {
    void operator()(int8_t* p) const;
  };
  int64_t N_, K_, padded_N_, steps_, chunk_steps_;
  std::unique_ptr<int8_t, Free> tiles_;
};

// A callable the product hands each block of result rows: (acc, stride, first, count) are rows
// [first, first + count) of C, row first + i at acc + i · stride, its first N columns valid (the rest
// zero). Valid during the call only. Refers to the callable, which must outlive the product.
class S8RowBlockSink {
 public:
  template <class F>
  S8RowBlockSink(F& f)  // NOLINT: implicit, so that a lambda is passed as it is
      : context_(&f), call_([](void* context, const int32_t* acc, int64_t stride, int64_t first, int64_t count) {
          (*static_cast<F*>(context))(acc, stride, first, count);
        }) {}
  void operator()(const int32_t* acc, int64_t stride, int64_t first, int64_t count) const {
    call_(context_, acc, stride, first, count);
  }

 private:
  void* context_;
  void (*call_)(void*, const int32_t*, int64_t, int64_t, int64_t);
};

// C = A · Bᵀ for A [M, weights.cols()] with rows `lda` apart, handed to `sink` 32 rows at a time, in
// order. Runs on the calling thread (the tower threads over tiles of pixels). Throws fastvlm::Error when
// !int8_tiles_available().
void amx_s8_gemm(const int8_t* a, int64_t M, int64_t lda, const AmxS8Weights& weights, S8RowBlockSink sink);

}  // namespace fastvlm
