#pragma once
// Dense matrix products on float32 row-major matrices, run on oneDNN (which picks AVX-512/AMX JIT
// kernels for this CPU at run time and threads with OpenMP).
#include <algorithm>
#include <cstdint>
#include <memory>

#include "core/dtype.h"

namespace fastvlm {

class Avx2F32Weights;  // kernels/avx2_f32_gemm.h

// The fewest rows a tile of GEMMs on `type` operands should have at the active kernel level: 128 (smaller
// GEMMs lose more to their edges than the cache saves), but 512 for float32 below AVX-512. There oneDNN 2.6's
// AVX2 gemm had run the tower's short-K, wide products (K 384 -> N 1536, 768 -> 3072) at 40-70% of the FMA
// peak with fewer rows and at 80-90% from 512 (AMD Zen 3, one thread); avx2_f32_gemm, which now runs them,
// reaches ~95% at 128 rows too, yet on two threads the tower's stage of 384 channels still ran 4-8% faster
// in tiles of 512 (bench/vision_ab.sh, THREADS=2).
int64_t min_tile_rows(DType type);

// Rows per tile of a tiled product on `type` operands whose rows each keep `bytes_per_row` in flight (int32
// results before their epilogue, a hidden activation between two GEMMs): as many as keep the tile within
// ~768 KB, so that it stays in the core's L2 cache from one step to the next, but never fewer than
// min_tile_rows(type) nor more than 1024.
inline int64_t l2_tile_rows(int64_t bytes_per_row, DType type) {
  constexpr int64_t kTileBytes = 768 << 10, kMaxRows = 1024;
  return std::clamp(kTileBytes / bytes_per_row / 64 * 64, min_tile_rows(type), kMaxRows);
}

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

// y[M,N] = x[M,K] · w[N,K]ᵀ + bias with x and w bfloat16 (raw bits), y and bias float32, accumulated in
// float32 (oneDNN: AMX tiles where present, else AVX512-BF16). Needs bf16_compute_available()
// (kernels/capabilities.h); throws fastvlm::Error otherwise.
void linear_bf16(const uint16_t* x, int64_t M, int64_t K, const uint16_t* w, int64_t N, const float* bias, float* y);

// Weights B[N,K] (the Linear / 1x1 conv layout), signed 8-bit codes, bfloat16 bits or float32, rearranged
// once, at load, into the blocked layout oneDNN's brgemm kernels read without copying: AMX tile panels where
// the CPU has AMX, VNNI / AVX512-BF16 panels otherwise (int8 with the s8·s8 compensation row), column panels
// for float32. Without it, every product re-packs (float32: transposes) all of B, which for the vision
// tower's tiles of a few hundred pixels costs a good part of the product itself. The layout follows the
// active kernel level at packing time: at the AVX2 level float32 weights are packed for avx2_f32_gemm
// (kernels/avx2_f32_gemm.h) instead, which matmul() then runs in place of oneDNN. Int8 needs int8_compute_available(), bfloat16
// bf16_compute_available(); throws fastvlm::Error otherwise. Float32 packs at every level.
class PackedWeights {
 public:
  PackedWeights(const int8_t* codes, int64_t N, int64_t K);
  PackedWeights(const uint16_t* bf16, int64_t N, int64_t K);
  PackedWeights(const float* f32, int64_t N, int64_t K);
  ~PackedWeights();
  PackedWeights(const PackedWeights&) = delete;
  PackedWeights& operator=(const PackedWeights&) = delete;

  DType type() const { return type_; }  // I8, BF16 or F32
  int64_t rows() const { return N_; }
  int64_t cols() const { return K_; }
  // oneDNN's opaque view of the packed panels (defined in gemm.cpp); absent where avx2_f32() is not null.
  struct Layout;
  const Layout& layout() const { return *layout_; }
  // The float32 panels of the AVX2 level, or null.
  const Avx2F32Weights* avx2_f32() const { return avx2_f32_.get(); }

 private:
  PackedWeights(DType type, const void* weights, int64_t N, int64_t K);

  DType type_;
  int64_t N_, K_;
  std::unique_ptr<Layout> layout_;
  std::unique_ptr<Avx2F32Weights> avx2_f32_;
};

// What matmul() does with each result element after adding the bias.
enum class Epilogue {
  None,         // C = A·op(B) + bias
  Gelu,         // C = gelu_erf(A·op(B) + bias)
  AddToOutput,  // C += A·op(B) + bias (a residual connection; C must be F32)
};

// C[M,N] = epilogue(A[M,K] · op(B) + bias[N]) on strided row-major matrices, accumulated in float32.
// op(B) = Bᵀ with B stored [N,K] when b_transposed (Linear / 1x1 conv weights), else B stored [K,N].
// Operands are DType::F32 or DType::BF16 (raw bfloat16 bits, uint16_t); A and B must have the same type;
// BF16 needs bf16_compute_available() (AMX tiles where present) and
// throws fastvlm::Error otherwise. B is either a plain matrix (b, ldb, b_transposed) or, for BF16, weights
// packed at load (packed_b, N and K its rows and columns). The primitive for each distinct shape is
// created once and reused.
struct MatmulSpec {
  int64_t M = 0, N = 0, K = 0;
  DType ab_type = DType::F32;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  bool b_transposed = true;
  const PackedWeights* packed_b = nullptr;  // instead of b, ldb and b_transposed
  DType c_type = DType::F32;
  void* c = nullptr;
  int64_t ldc = 0;
  const float* bias = nullptr;  // [N] or null
  Epilogue epilogue = Epilogue::None;
};
void matmul(const MatmulSpec& spec);

}  // namespace fastvlm

namespace fastvlm {

// C[M,N] = A[M,K] · B[N,K]ᵀ for signed 8-bit A and packed B, exact in int32; the caller dequantises (with
// the scales it quantised A and B with) while C is still in cache. Runs on oneDNN's brgemm (AMX-INT8 tiles
// where present, else AVX512-VNNI vpdpbusd): oneDNN 2.x takes its fast kernels only for products without
// run-time scales, hence the plain int32 result. Needs int8_compute_available(); throws fastvlm::Error
// otherwise. Primitives are cached per shape as for matmul().
struct Int8MatmulSpec {
  int64_t M = 0;
  const int8_t* a = nullptr;  // [M, b->cols()]
  int64_t lda = 0;
  const PackedWeights* b = nullptr;
  int32_t* c = nullptr;  // [M, b->rows()]
  int64_t ldc = 0;
};
void matmul_s8(const Int8MatmulSpec& spec);

}  // namespace fastvlm
