#pragma once
// Dense matrix products on float32 row-major matrices, run on oneDNN (which picks AVX-512/AMX JIT
// kernels for this CPU at run time and threads with OpenMP).
#include <cstdint>

namespace fastvlm {

// C[M,N] = A[M,K] · op(B) (+ bias[N] broadcast over rows, when bias is not null).
// op(B) = Bᵀ with B stored [N,K] (PyTorch Linear / 1x1 conv weight layout) when b_transposed,
// otherwise B stored [K,N]. lda/ldb/ldc are row strides in elements.
void gemm_f32(bool b_transposed, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
              const float* B, int64_t ldb, float* C, int64_t ldc, const float* bias = nullptr);

// y[M,N] = x[M,K] · w[N,K]ᵀ + bias: a Linear layer on contiguous rows.
inline void linear_f32(const float* x, int64_t M, int64_t K, const float* w, int64_t N, const float* bias,
                       float* y) {
  gemm_f32(true, M, N, K, x, K, w, K, y, N, bias);
}

}  // namespace fastvlm
