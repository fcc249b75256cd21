#pragma once
// Float32 products on weights packed at load where the active kernel level is AVX2 (kernels/gemm.h's
// matmul() routes PackedWeights there): C[M, N] = epilogue(A[M, K] · B[N, K]ᵀ + bias). oneDNN 2.6's AVX2
// float32 GEMM ran the vision tower's products at 38-80 GFLOP/s of AMD Zen 3's ~100 GFLOP/s FMA peak per core
// (bench_vision_kernels' BM_PointwiseGemmF32Packed, one thread), the wide expand products at 128-256 rows
// lowest, which is all the rows the later stages have at 512². This one multiplies 6 rows by 16 columns in
// 12 FMA registers over slices of K whose 16-column weight panel stays in L1 while a strip of rows passes.
#include <cstdint>
#include <memory>

#include "kernels/gemm.h"

namespace fastvlm {

// Weights B [N, K] (the Linear / 1x1 conv layout) rearranged once, at load: panels of 16 output columns, each
// holding for every k the 16 columns' weights side by side (64 bytes: two registers). N is padded to 16 with
// zero columns.
class Avx2F32Weights {
 public:
  Avx2F32Weights(const float* weights, int64_t N, int64_t K);

  int64_t rows() const { return N_; }
  int64_t cols() const { return K_; }
  int64_t panels() const { return panels_; }  // N / 16, rounded up
  const float* panel(int64_t index) const { return data_.get() + index * K_ * 16; }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  int64_t N_, K_, panels_;
  std::unique_ptr<float, Free> data_;
};

// C = epilogue(A · Bᵀ + bias) for A [M, weights.cols()] with rows `lda` apart and C rows `ldc` apart: only
// C's first N columns are written, and AddToOutput adds to what they hold; bias may be null. Called outside an
// OpenMP parallel region, a product large enough to pay for waking the team is split over its threads by
// blocks of rows and columns; inside one (the tower's per-thread tiles) it runs on the calling thread. Each
// result is the same sum in the same order either way. Throws fastvlm::Error below AVX2.
void avx2_f32_gemm(const float* a, int64_t M, int64_t lda, const Avx2F32Weights& weights, float* c, int64_t ldc,
                   const float* bias, Epilogue epilogue);

}  // namespace fastvlm
