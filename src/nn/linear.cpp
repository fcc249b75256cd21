#include "nn/linear.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/activations.h"
#include "kernels/capabilities.h"
#include "kernels/dequantize.h"
#include "kernels/gemm.h"
#include "kernels/gemv.h"
#include "kernels/int8_epilogue.h"
#include "kernels/qgemm.h"
#include "kernels/quant_bf16_gemm.h"
#include "kernels/weight_quant.h"

namespace fastvlm {
namespace {

// Decode feeds one row per running sequence. Up to this many rows the multi-row GEMV (each weight read once
// for all rows, no packing) beats the prefill GEMM. With int8 tiles (AMX) gemv_quant_batch covers up to 16
// rows at little more than one row's cost (bench_llm_kernels BM_LlmDecodeBatch, FastVLM-0.5B, one thread: a
// step of 8 sequences costs 1.35x (q8_0) / 1.5x (q4_0) a step of one, 1.8x / 2.2x through the GEMM).
// With the VNNI GEMM but no tiles the vector GEMV's per-row
// arithmetic outgrows the GEMM's packing: q8_0 and bf16 cost the same both ways at 4 rows; Q4_0, with its
// nibble unpacking per row, already at 3.
// Without an int8 GEMM (AVX2) the alternative is dequantising W to float32 and the f32 GEMM, which writes
// and reads 4 bytes per weight where the GEMV reads ~1 once: up to 16 rows the GEMV costs less (same
// benchmark, AVX2 Zen 3, one thread, CPU µs, GEMV / dequantise + f32 GEMM at 1, 4, 8, 16 rows; q8_0:
// 896x896 74/263, 170/445, 287/446, 602/596; 4864x896 385/1665, 771/2961, 1462/3923, 3035/4442; 896x4864
// 373/1882, 772/2595, 1446/2853, 2891/3488; q4_0: 4864x896 315/5518, 710/7505, 1521/6726, 3016/7339), and
// a decode batch stays on the single-row arithmetic (int8 activations), as models/test_batched_decode asks.
// Against the AVX2 int8 GEMM (linear_quant) the GEMV still costs no more up to 16 rows over a layer's
// shapes (BM_DecodeRows_q8_0_gemm, CPU µs, GEMV / GEMM at 8, 12, 16 rows: 4864x896 1701/2015, 2158/2375,
// 2999/2982; 896x4864 1553/3170, 2283/3044, 3395/3686; only 896x896 is cheaper by GEMM, 563/460 at 16).
bool is_block_quantized(WeightType storage) { return storage == WeightType::Q8_0 || storage == WeightType::Q4_0; }

int max_rows_for_gemv(WeightType storage) {
  if (is_block_quantized(storage) && (kernels::int8_tiles_available() || !kernels::int8_compute_available()))
    return 16;
  return storage == WeightType::Q4_0 ? 2 : 4;
}

// Quantised products of at least this many rows take the AMX route (bf16-rounded activations). It wins
// over the int8 GEMM from about 8 rows (bench_llm_kernels BM_PrefillRows_*, Qwen2-0.5B shapes), but a
// batch of up to 16 decoding sequences stays on the int8 arithmetic of the single-row GEMV, so that a
// sequence decodes the same in a batch as alone (models/test_batched_decode).
constexpr int64_t min_rows_for_amx() { return 17; }

void expect_dtype(const Checkpoint& checkpoint, const TensorInfo& info, DType expected, const char* why) {
  if (info.dtype != expected)
    throw Error(checkpoint.file_of(info.name).string() + ": tensor '" + info.name + "' is " +
                std::string(dtype_name(info.dtype)) + ", expected " + std::string(dtype_name(expected)) + " (" +
                why + ")");
}

// Buffers of the calling thread's products, reused across calls (and layers): a prefill GEMM's bf16
// input or float32 weights; an int8 product's activation codes and scales, and its int32 results until the
// epilogue has read them.
struct Scratch {
  ScratchBuffer x_bf16, weights_f32, codes, row_scales, accumulators;
};
Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

}  // namespace

Linear Linear::load_dense(const Checkpoint& checkpoint, const std::string& prefix, int out_features,
                          int in_features, bool with_bias, WeightType storage) {
  Linear linear;
  linear.in_features_ = in_features;
  linear.out_features_ = out_features;
  const std::string name = prefix + ".weight";
  if (storage == WeightType::F32) {
    linear.storage_ = WeightType::F32;
    linear.f32_ = std::make_shared<const Tensor>(checkpoint.load_f32(name, {out_features, in_features}));
  } else if (storage == WeightType::BF16) {
    linear.storage_ = WeightType::BF16;
    const TensorInfo& info = checkpoint.tensor(name, {out_features, in_features});
    if (info.dtype == DType::BF16) {
      linear.bf16_ = reinterpret_cast<const uint16_t*>(info.data);
    } else {
      const Tensor widened = checkpoint.load_f32(name, {out_features, in_features});
      auto converted = std::make_shared<std::vector<uint16_t>>(size_t(widened.numel()));
      f32_to_bf16_simd(widened.data(), converted->data(), widened.numel());
      linear.bf16_ = converted->data();
      linear.converted_bf16_ = std::move(converted);
    }
  } else {
    throw Error("internal: a dense Linear is held as f32 or bf16, not " + std::string(weight_type_name(storage)));
  }
  if (with_bias) linear.load_bias(checkpoint, prefix);
  return linear;
}

namespace {

void expect_groups(const Checkpoint& checkpoint, const std::string& prefix, int in_features) {
  if (in_features % kQuantGroupSize != 0)
    throw Error(checkpoint.dir().string() + ": '" + prefix + "' has " + std::to_string(in_features) +
                " inputs, not a multiple of the quantisation group size 32");
}

}  // namespace

Linear Linear::load(const Checkpoint& checkpoint, const std::string& prefix, int out_features, int in_features,
                    bool with_bias, WeightType storage, const std::shared_ptr<WeightArena>& arena) {
  const std::string& quantization = checkpoint.quantization().type;
  const bool block_storage = is_block_quantized(storage);
  if (quantization.empty())
    return block_storage ? quantize_at_load(checkpoint, prefix, out_features, in_features, with_bias, storage, arena)
                         : load_dense(checkpoint, prefix, out_features, in_features, with_bias, storage);
  const WeightType type = quantization == "q8_0" ? WeightType::Q8_0 : WeightType::Q4_0;
  expect_groups(checkpoint, prefix, in_features);
  const TensorInfo& codes = checkpoint.tensor(prefix + ".weight", {out_features, quant_row_bytes(type, in_features)});
  expect_dtype(checkpoint, codes, type == WeightType::Q8_0 ? DType::I8 : DType::U8, "quantised codes");
  const TensorInfo& scales = checkpoint.tensor(prefix + ".weight_scale", {out_features, in_features / kQuantGroupSize});
  expect_dtype(checkpoint, scales, DType::F16, "per-group scales");
  auto* code_copy = static_cast<uint8_t*>(arena->allocate(codes.nbytes));
  auto* scale_copy = static_cast<uint16_t*>(arena->allocate(scales.nbytes));
  checkpoint.move_into(prefix + ".weight", code_copy);
  checkpoint.move_into(prefix + ".weight_scale", scale_copy);
  const int row_block = kernels::quant_row_block();
  block_rows_in_place(code_copy, out_features, quant_row_bytes(type, in_features), row_block);
  Linear linear;
  linear.storage_ = type;
  linear.quantized_ = QuantMatrix{type, code_copy, scale_copy, out_features, in_features, row_block};
  linear.arena_ = arena;
  linear.in_features_ = in_features;
  linear.out_features_ = out_features;
  if (with_bias) linear.load_bias(checkpoint, prefix);
  return linear;
}

Linear Linear::quantize_at_load(const Checkpoint& checkpoint, const std::string& prefix, int out_features,
                                int in_features, bool with_bias, WeightType type,
                                const std::shared_ptr<WeightArena>& arena) {
  expect_groups(checkpoint, prefix, in_features);
  const TensorInfo& info = checkpoint.tensor(prefix + ".weight", {out_features, in_features});
  if (info.dtype != DType::F32 && info.dtype != DType::F16 && info.dtype != DType::BF16)
    expect_dtype(checkpoint, info, DType::BF16, "a float weight to quantise");
  const int64_t row_bytes = quant_row_bytes(type, in_features), groups = in_features / kQuantGroupSize;
  auto* codes = static_cast<uint8_t*>(arena->allocate(size_t(out_features * row_bytes)));
  auto* scales = static_cast<uint16_t*>(arena->allocate(size_t(out_features * groups) * sizeof(uint16_t)));
  // A slab of rows at a time: each slab's mapped pages are given back once it is quantised, so the load
  // never holds more of the float weights than the slab at hand beside the quantised copies.
  constexpr int64_t kSlabRows = 256;
  static_assert(kSlabRows % kQuantRowBlock == 0);
  const int row_block = kernels::quant_row_block();
  const size_t slab_row_bytes = size_t(in_features) * dtype_size(info.dtype);
  for (int64_t first = 0; first < out_features; first += kSlabRows) {
    const int64_t rows = std::min<int64_t>(kSlabRows, out_features - first);
    quantize_finite_weight_rows(checkpoint.file_of(info.name).string() + ": tensor '" + info.name + "'", first, type,
                                info.dtype, info.data + first * slab_row_bytes, rows, in_features,
                                codes + first * row_bytes, scales + first * groups);
    // The slab starts a block (kSlabRows is a multiple of the block), so its blocks are the matrix's.
    block_rows_in_place(codes + first * row_bytes, rows, row_bytes, row_block);
    checkpoint.release(prefix + ".weight", first * slab_row_bytes, (first + rows) * slab_row_bytes);
  }
  // Once more as a whole: reading a slab maps back, by the kernel's fault-around, up to 64 KiB of the
  // released pages just before it (where the page cache holds large folios, as ext4 does from Linux 6.16,
  // the whole folio, up to 2 MiB).
  checkpoint.release(prefix + ".weight");
  Linear linear;
  linear.storage_ = type;
  linear.quantized_ = QuantMatrix{type, codes, scales, out_features, in_features, row_block};
  linear.arena_ = arena;
  linear.in_features_ = in_features;
  linear.out_features_ = out_features;
  if (with_bias) linear.load_bias(checkpoint, prefix);
  return linear;
}

int64_t Linear::weight_bytes() const {
  const int64_t weights = int64_t(out_features_) * in_features_;
  switch (storage_) {
    case WeightType::F32: return weights * int64_t(sizeof(float));
    case WeightType::BF16: return weights * int64_t(sizeof(uint16_t));
    case WeightType::S8: return weights + out_features_ * int64_t(sizeof(float));
    case WeightType::Q8_0:
    case WeightType::Q4_0:
      return out_features_ * (quant_row_bytes(storage_, in_features_) +
                              in_features_ / kQuantGroupSize * int64_t(sizeof(uint16_t)));
  }
  return 0;
}

void Linear::load_bias(const Checkpoint& checkpoint, const std::string& prefix) {
  const Tensor bias = checkpoint.load_f32(prefix + ".bias", {out_features_});
  bias_.assign(bias.data(), bias.data() + bias.numel());
}

Linear Linear::from_f32(Tensor weight, Tensor bias, WeightType storage) {
  if (weight.rank() != 2 || (!bias.empty() && bias.numel() != weight.dim(0)))
    throw Error("internal: Linear::from_f32 takes a weight [out, in] and a bias [out] or none, got " +
                shape_string(weight.shape()) + " and " + shape_string(bias.shape()));
  Linear linear;
  linear.storage_ = storage;
  linear.out_features_ = int(weight.dim(0));
  linear.in_features_ = int(weight.dim(1));
  linear.bias_.assign(bias.data(), bias.data() + bias.numel());
  switch (storage) {
    case WeightType::F32:
      linear.packed_ = std::make_shared<const PackedWeights>(weight.data(), linear.out_features_, linear.in_features_);
      break;
    case WeightType::BF16: {
      std::vector<uint16_t> converted(size_t(weight.numel()));
      f32_to_bf16_simd(weight.data(), converted.data(), weight.numel());
      if (kernels::bf16_compute_available()) {
        linear.packed_ =
            std::make_shared<const PackedWeights>(converted.data(), linear.out_features_, linear.in_features_);
      } else {
        auto kept = std::make_shared<std::vector<uint16_t>>(std::move(converted));
        linear.bf16_ = kept->data();
        linear.converted_bf16_ = std::move(kept);
      }
      break;
    }
    case WeightType::S8: {
      std::vector<int8_t> codes(size_t(weight.numel()));
      linear.s8_scales_.resize(size_t(linear.out_features_));
      quantize_rows_s8(weight.data(), linear.out_features_, linear.in_features_, linear.in_features_, codes.data(),
                       linear.s8_scales_.data());
      if (kernels::int8_tiles_available())
        linear.amx_s8_ = std::make_shared<const AmxS8Weights>(codes.data(), linear.out_features_, linear.in_features_);
      else if (kernels::int8_compute_available())
        linear.packed_ = std::make_shared<const PackedWeights>(codes.data(), linear.out_features_, linear.in_features_);
      else
        linear.avx2_s8_ = std::make_shared<const Avx2S8Weights>(codes.data(), linear.out_features_, linear.in_features_);
      break;
    }
    case WeightType::Q8_0:
    case WeightType::Q4_0:
      throw Error("internal: Linear::from_f32 holds f32, bf16 or s8, not " + std::string(weight_type_name(storage)));
  }
  return linear;
}

void Linear::forward(const float* x, int rows, float* y) const {
  forward({DType::F32, const_cast<float*>(x)}, rows, {DType::F32, y}, Epilogue::None);
}

void Linear::forward(const Activations& x, int64_t rows, const Activations& y, Epilogue epilogue) const {
  if (storage_ == WeightType::S8) {
    if (x.type != DType::F32) throw Error("internal: an s8 Linear quantises float32 input");
    return forward_quantizing(static_cast<const float*>(x.data), rows, y, epilogue);
  }
  if (storage_ == WeightType::F32 || x.type == DType::BF16) {
    if (x.type != (storage_ == WeightType::F32 ? DType::F32 : DType::BF16))
      throw Error("internal: a " + std::string(weight_type_name(storage_)) + " Linear on " +
                  std::string(dtype_name(x.type)) + " input");
    matmul({.M = rows,
            .N = out_features_,
            .K = in_features_,
            .ab_type = x.type,
            .a = x.data,
            .lda = in_features_,
            .b = packed_ ? nullptr
                 : x.type == DType::F32 ? static_cast<const void*>(f32_->data())
                                        : static_cast<const void*>(bf16_),
            .ldb = in_features_,
            .b_transposed = true,
            .packed_b = packed_.get(),
            .c_type = y.type,
            .c = y.data,
            .ldc = out_features_,
            .bias = bias(),
            .epilogue = epilogue});
    return;
  }
  if (epilogue != Epilogue::None || y.type != DType::F32)
    throw Error("internal: a " + std::string(weight_type_name(storage_)) +
                " Linear on float32 input fuses no epilogue and writes float32");
  if (storage_ == WeightType::BF16 && !bf16_) throw Error("internal: a packed bf16 Linear multiplies bfloat16 rows only");
  forward_decoder(static_cast<const float*>(x.data), rows, static_cast<float*>(y.data));
}

void Linear::forward_decoder(const float* x, int64_t rows, float* y) const {
  const float* b = bias();
  const bool quantized = is_block_quantized(storage_);
  if (rows <= max_rows_for_gemv(storage_)) {
    if (quantized) {
      // One row (plain decoding) keeps the single-row GEMV; a batch may sum in another order.
      (rows == 1 ? gemv_quant_rows : gemv_quant_batch)(quantized_, x, rows, y);
    } else {
      gemv_bf16_rows(bf16_, out_features_, in_features_, x, rows, y);
    }
    add_bias(y, rows);
    return;
  }
  // Prefill: quantised weights go through AMX tiles, expanded to bf16 panel by panel, where the CPU has
  // AMX-BF16 and the product has more rows than a decode batch; else through the int8 GEMM on their stored
  // codes (VNNI or AVX2); bf16 weights through a bf16 GEMM where it has bf16 products; else float32.
  if (takes_amx_route(rows)) {
    linear_quant_bf16(x, rows, quantized_, b, y);
    return;
  }
  if (takes_integer_route(rows)) {
    linear_quant(x, rows, quantized_, b, y);
    return;
  }
  Scratch& scratch = thread_scratch();
  const int64_t weight_count = int64_t(out_features_) * in_features_;
  if (!quantized && kernels::bf16_compute_available()) {
    const int64_t count = int64_t(rows) * in_features_;
    uint16_t* x_bf16 = scratch.x_bf16.as<uint16_t>(count);
    f32_to_bf16_simd(x, x_bf16, count);
    linear_bf16(x_bf16, rows, in_features_, bf16_, out_features_, b, y);
    return;
  }
  float* weights = scratch.weights_f32.as<float>(weight_count);
  if (quantized) {
    dequantize_rows_f32(quantized_, 0, out_features_, weights);
  } else {
    convert_to_f32(DType::BF16, bf16_, weights, size_t(weight_count));
  }
  linear_f32(x, rows, in_features_, weights, out_features_, b, y);
}

void Linear::add_bias(float* y, int64_t rows) const {
  const float* b = bias();
  if (!b) return;
  for (int64_t r = 0; r < rows; ++r)
    for (int o = 0; o < out_features_; ++o) y[r * out_features_ + o] += b[o];
}

bool Linear::takes_amx_route(int64_t rows) const {
  // Above max_rows_for_gemv() (at most 16), so a product on this route is never one for the GEMV.
  static_assert(min_rows_for_amx() > 16);
  return is_block_quantized(storage_) && rows >= min_rows_for_amx() && kernels::amx_bf16_available();
}

bool Linear::takes_integer_route(int64_t rows) const {
  return is_block_quantized(storage_) && rows > max_rows_for_gemv(storage_) && !takes_amx_route(rows) &&
         kernels::quant_int8_gemm_available();
}

void Linear::forward_shared_input(const float* x, int rows, std::span<const Linear* const> linears,
                                  std::span<float* const> ys) {
  if (linears.size() != ys.size())
    throw Error("internal: Linear::forward_shared_input with " + std::to_string(linears.size()) + " layers and " +
                std::to_string(ys.size()) + " outputs");
  auto all = [&](auto&& predicate) { return std::all_of(linears.begin(), linears.end(), predicate); };
  const bool one_quantized_row = rows == 1 && all([&](const Linear* linear) {
    return is_block_quantized(linear->storage_) && linear->storage_ == linears[0]->storage_ &&
           linear->in_features_ == linears[0]->in_features_;
  });
  if (one_quantized_row) {
    std::vector<const QuantMatrix*> matrices;
    for (const Linear* linear : linears) matrices.push_back(&linear->quantized_);
    gemv_quant_shared(matrices, x, ys);
    for (size_t i = 0; i < linears.size(); ++i) linears[i]->add_bias(ys[i], 1);
    return;
  }
  const bool same_input = all([&](const Linear* linear) { return linear->in_features_ == linears[0]->in_features_; });
  const bool all_amx = same_input && all([&](const Linear* linear) { return linear->takes_amx_route(rows); });
  const bool all_integer = same_input && all([&](const Linear* linear) { return linear->takes_integer_route(rows); });
  if (!all_amx && !all_integer) {
    for (size_t i = 0; i < linears.size(); ++i) linears[i]->forward(x, rows, ys[i]);
    return;
  }
  std::vector<QuantProduct> products;
  for (size_t i = 0; i < linears.size(); ++i) products.push_back({&linears[i]->quantized_, linears[i]->bias(), ys[i]});
  if (all_amx)
    linear_quant_bf16(x, rows, products);
  else
    linear_quant(x, rows, products);
}

void Linear::forward_quantizing(const float* x, int64_t rows, const Activations& y, Epilogue epilogue) const {
  // Each tile's int32 products stay in L2 for the epilogue.
  const int64_t tile_rows = l2_tile_rows(out_features_ * int64_t(sizeof(int32_t)), DType::I8);
  const int64_t tiles = (rows + tile_rows - 1) / tile_rows;
#pragma omp parallel for schedule(dynamic)
  for (int64_t tile = 0; tile < tiles; ++tile) {
    Scratch& scratch = thread_scratch();
    int8_t* codes = scratch.codes.as<int8_t>(tile_rows * in_features_);
    float* row_scales = scratch.row_scales.as<float>(tile_rows);
    const int64_t first = tile * tile_rows, count = std::min(tile_rows, rows - first);
    quantize_rows_s8(x + first * in_features_, count, in_features_, in_features_, codes, row_scales);
    forward_s8(codes, row_scales, count, {y.type, y.at(first * out_features_)}, epilogue);
  }
}

void Linear::product_s8(const int8_t* codes, int64_t rows, S8RowBlockSink epilogue) const {
  if (storage_ != WeightType::S8)
    throw Error("internal: int8 activation codes need an s8 Linear, not " + std::string(weight_type_name(storage_)));
  if (amx_s8_) return amx_s8_gemm(codes, rows, in_features_, *amx_s8_, epilogue);
  if (avx2_s8_) return avx2_s8_gemm(codes, rows, in_features_, *avx2_s8_, epilogue);
  int32_t* acc = thread_scratch().accumulators.as<int32_t>(rows * out_features_);
  matmul_s8({.M = rows, .a = codes, .lda = in_features_, .b = packed_.get(), .c = acc, .ldc = out_features_});
  epilogue(acc, out_features_, 0, rows);
}

void Linear::forward_s8(const int8_t* codes, const float* row_scales, int64_t rows, const Activations& y,
                        Epilogue epilogue) const {
  if (epilogue == Epilogue::AddToOutput && y.type != DType::F32)
    throw Error("internal: adding to the output needs a float32 output");
  const int64_t cols = out_features_;
  auto finish = [&](const int32_t* acc, int64_t stride, int64_t first, int64_t count) {
    const float* scales = row_scales + first;
    if (epilogue == Epilogue::AddToOutput) {
      dequantize_add(acc, count, cols, stride, scales, s8_scales_.data(), bias(),
                     static_cast<float*>(y.at(first * cols)));
      return;
    }
    const bool f32 = y.type == DType::F32;
    dequantize_store(acc, count, cols, stride, scales, s8_scales_.data(), bias(), epilogue == Epilogue::Gelu,
                     f32 ? static_cast<float*>(y.at(first * cols)) : nullptr,
                     f32 ? nullptr : static_cast<uint16_t*>(y.at(first * cols)));
  };
  product_s8(codes, rows, finish);
}

void Linear::forward_s8_gelu_requantize(const int8_t* codes, const float* row_scales, int64_t rows,
                                        int8_t* out_codes, float* out_scales) const {
  const int64_t cols = out_features_;
  auto finish = [&](const int32_t* acc, int64_t stride, int64_t first, int64_t count) {
    dequantize_gelu_quantize(acc, count, cols, stride, row_scales + first, s8_scales_.data(), bias(),
                             out_codes + first * cols, out_scales + first);
  };
  product_s8(codes, rows, finish);
}

void Linear::row(int64_t index, float* out) const {
  switch (storage_) {
    case WeightType::F32:
      if (!f32_) throw Error("internal: a packed f32 Linear is not looked up by row");
      std::memcpy(out, f32_->data() + index * in_features_, sizeof(float) * in_features_);
      break;
    case WeightType::BF16:
      if (!bf16_) throw Error("internal: a packed bf16 Linear is not looked up by row");
      convert_to_f32(DType::BF16, bf16_ + index * in_features_, out, size_t(in_features_));
      break;
    case WeightType::Q8_0:
    case WeightType::Q4_0:
      dequantize_rows_f32(quantized_, index, 1, out);
      break;
    case WeightType::S8:
      throw Error("internal: the vision tower's s8 Linears are not looked up by row");
  }
}

}  // namespace fastvlm
