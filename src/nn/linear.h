#pragma once
// y = x·Wᵀ + b, whatever the weight's storage: float32, bfloat16 (usually used in place in the
// checkpoint's mapping), Q8_0/Q4_0 blocks of a `fastvlm quantize`d checkpoint, or int8 codes with one
// scale per output row (quantised at load). The layer picks the product itself: a GEMV per row for a few
// rows (decode), a GEMM for many (prefill), an int8 product on the stored codes where the kernels offer
// it. The vision tower's layers also fuse an epilogue (GELU, residual add) into the product, run on
// bfloat16 activations, and feed int8 activation codes they quantised themselves.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"
#include "core/tensor.h"
#include "core/weight_arena.h"
#include "io/checkpoint.h"
#include "kernels/amx_int8_gemm.h"
#include "kernels/avx2_int8_gemm.h"
#include "kernels/gemm.h"

namespace fastvlm {

// Contiguous rows of a layer's input or output: float32, or bfloat16 bits.
struct Activations {
  DType type = DType::F32;  // F32 or BF16
  void* data = nullptr;
  // The element `index` elements in.
  void* at(int64_t index) const { return static_cast<char*>(data) + index * int64_t(dtype_size(type)); }
};

class Linear {
 public:
  Linear() = default;
  // `prefix`.weight ([out, in], any float type in the checkpoint, held as `storage`: F32 or BF16) and, with
  // `with_bias`, `prefix`.bias. Throws fastvlm::Error naming a missing or misshapen tensor (a bias the
  // config promises included).
  static Linear load_dense(const Checkpoint& checkpoint, const std::string& prefix, int out_features,
                           int in_features, bool with_bias, WeightType storage);
  // The same, but block-quantised as stored when the checkpoint is (its model's linears are). On a dense
  // checkpoint `storage` Q8_0 or Q4_0 block-quantises the weights while loading (core/quant.h), so that
  // the layer runs the int8 products of a quantised checkpoint. Block-quantised codes and scales, stored or
  // made here, are held in `arena` (on huge pages, see core/weight_arena.h), the stored ones' mapped pages
  // given back; the Linear keeps the arena alive.
  static Linear load(const Checkpoint& checkpoint, const std::string& prefix, int out_features, int in_features,
                     bool with_bias, WeightType storage, const std::shared_ptr<WeightArena>& arena);
  // From float weights the caller has already edited (norms and scales folded in, which must precede any
  // rounding): `weight` [out, in], `bias` [out] or empty, held as `storage`: F32, BF16 or S8 (codes
  // round(w / s) with s = max|row| / 127 per output row). BF16 layers built here multiply bfloat16 rows
  // only (forward with bfloat16 x) where the CPU has bf16 products.
  static Linear from_f32(Tensor weight, Tensor bias, WeightType storage);

  // y[rows, out_features] = x[rows, in_features]·Wᵀ + b.
  void forward(const float* x, int rows, float* y) const;
  // ys[i] = x·linears[i]ᵀ + b_i for layers on one float32 input (a decoder layer's q/k/v or gate/up): in
  // block-quantised prefill x is converted and packed for the AMX tiles, or quantised for the int8 GEMM,
  // once for all of them; block-quantised layers of one type on one decoding row share one quantised x and one parallel
  // region (gemv_quant_shared); otherwise each layer runs forward(x, rows, ys[i]).
  static void forward_shared_input(const float* x, int rows, std::span<const Linear* const> linears,
                                   std::span<float* const> ys);
  // y = epilogue(x·Wᵀ + b) with x and y float32 or bfloat16 (AddToOutput: y float32). F32 and BF16 weights
  // multiply in x's type, which must be theirs (bfloat16 x: BF16 weights); S8 weights quantise float32 x
  // per row (each row its own scale) and multiply the codes in int32. Q8_0/Q4_0 and BF16 weights on
  // float32 x take the decoder's products, which fuse no epilogue: there only Epilogue::None into float32.
  // Threads itself with OpenMP; called inside a parallel region, it runs on the calling thread.
  void forward(const Activations& x, int64_t rows, const Activations& y, Epilogue epilogue) const;
  // S8 weights on activations the caller quantised per row (codes [rows, in_features], real value
  // codes[r, c] · row_scales[r]): y = epilogue(product + b), y as in forward. Runs on the calling thread.
  void forward_s8(const int8_t* codes, const float* row_scales, int64_t rows, const Activations& y,
                  Epilogue epilogue) const;
  // The same with GELU, the result requantised per row into (out_codes [rows, out_features], out_scales
  // [rows]) while it is in cache: the next S8 Linear's input.
  void forward_s8_gelu_requantize(const int8_t* codes, const float* row_scales, int64_t rows, int8_t* out_codes,
                                  float* out_scales) const;
  // out[in_features] = row `index` of W as floats (embedding lookup through the same storage).
  void row(int64_t index, float* out) const;

  int in_features() const { return in_features_; }
  // Bytes of weights (codes and scales when block-quantised) one pass over the layer reads: what a GEMV
  // streams from memory per decoded token. The bias is left out (a few floats per output).
  int64_t weight_bytes() const;
  int out_features() const { return out_features_; }
  WeightType storage() const { return storage_; }

 private:
  void load_bias(const Checkpoint& checkpoint, const std::string& prefix);
  // A dense checkpoint's weight block-quantised as `type` into storage of its own.
  static Linear quantize_at_load(const Checkpoint& checkpoint, const std::string& prefix, int out_features,
                                 int in_features, bool with_bias, WeightType type, const std::shared_ptr<WeightArena>& arena);
  // BF16 or Q8_0/Q4_0 weights on float32 rows: GEMV, GEMM or the int8 product, y = x·Wᵀ + b.
  void forward_decoder(const float* x, int64_t rows, float* y) const;
  // Whether a product of `rows` float32 rows goes through AMX tiles (linear_quant_bf16).
  bool takes_amx_route(int64_t rows) const;
  // Whether it goes through the int8 GEMM on the stored codes (linear_quant: VNNI or AVX2).
  bool takes_integer_route(int64_t rows) const;
  // S8 weights on float32 rows: tiles quantised per row, then forward_s8.
  void forward_quantizing(const float* x, int64_t rows, const Activations& y, Epilogue epilogue) const;
  // codes · weight codesᵀ, exact in int32, handed to `epilogue` in blocks of rows (kernels/amx_int8_gemm.h):
  // 32 rows at a time on AMX tiles and 48 on AVX2, while they are in cache; all rows at once from oneDNN's.
  void product_s8(const int8_t* codes, int64_t rows, S8RowBlockSink epilogue) const;
  const float* bias() const { return bias_.empty() ? nullptr : bias_.data(); }
  // y[rows, out_features] += b, where there is a bias.
  void add_bias(float* y, int64_t rows) const;

  WeightType storage_ = WeightType::F32;
  std::shared_ptr<const Tensor> f32_;  // F32 from load_dense: [out, in]
  const uint16_t* bf16_ = nullptr;     // BF16: [out, in], usually in the mmap
  std::shared_ptr<const std::vector<uint16_t>> converted_bf16_;  // owns bf16_ when the checkpoint was not bf16
  QuantMatrix quantized_;              // Q8_0/Q4_0: codes and scales in arena_
  std::shared_ptr<const WeightArena> arena_;
  // S8 with AVX512-VNNI but no AMX-INT8: the [out, in] codes (weight = code · s8_scales_[o]) for oneDNN's
  // matmul_s8; F32 from from_f32, and BF16 from from_f32 where the CPU has bf16 products (the vision
  // tower's layers, only ever multiplied as GEMMs, BF16 ones with bfloat16 rows): the weights, with f32_ /
  // bf16_ null. Packed for the products at load.
  std::shared_ptr<const PackedWeights> packed_;
  // S8 where the CPU has AMX-INT8: the codes in tile order for amx_s8_gemm (epilogues fused per 32 rows).
  std::shared_ptr<const AmxS8Weights> amx_s8_;
  // S8 without AVX512-VNNI (AVX2): the codes as 16-bit pairs for avx2_s8_gemm (epilogues fused per strip).
  std::shared_ptr<const Avx2S8Weights> avx2_s8_;
  std::vector<float> s8_scales_;       // S8: [out]
  std::vector<float> bias_;            // [out], empty when the layer has none
  int in_features_ = 0;
  int out_features_ = 0;
};

}  // namespace fastvlm
