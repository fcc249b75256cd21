#include "nn/linear.h"

#include <cstring>

#include "core/error.h"
#include "kernels/activations.h"
#include "kernels/capabilities.h"
#include "kernels/dequantize.h"
#include "kernels/gemm.h"
#include "kernels/gemv.h"
#include "kernels/qgemm.h"

namespace fastvlm {
namespace {

// Decode feeds one row at a time; up to this many rows a GEMV per row beats repacking for a GEMM.
constexpr int kMaxRowsForGemv = 3;

void expect_dtype(const Checkpoint& checkpoint, const TensorInfo& info, DType expected, const char* why) {
  if (info.dtype != expected)
    throw Error(checkpoint.file_of(info.name).string() + ": tensor '" + info.name + "' is " +
                std::string(dtype_name(info.dtype)) + ", expected " + std::string(dtype_name(expected)) + " (" +
                why + ")");
}

// Scratch buffers of one prefill GEMM, reused across calls (and layers) on the calling thread.
struct GemmScratch {
  std::vector<uint16_t> x_bf16;
  std::vector<float> weights_f32;
};
GemmScratch& gemm_scratch() {
  thread_local GemmScratch scratch;
  return scratch;
}

}  // namespace

Linear Linear::load_dense(const Checkpoint& checkpoint, const std::string& prefix, int out_features,
                          int in_features, bool with_bias, DType dtype) {
  Linear linear;
  linear.in_features_ = in_features;
  linear.out_features_ = out_features;
  const std::string name = prefix + ".weight";
  if (dtype == DType::F32) {
    linear.storage_ = Storage::F32;
    linear.f32_ = std::make_shared<const Tensor>(checkpoint.load_f32(name, {out_features, in_features}));
  } else if (dtype == DType::BF16) {
    linear.storage_ = Storage::BF16;
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
    throw Error("internal: a dense Linear is held as F32 or BF16");
  }
  if (with_bias) linear.load_bias(checkpoint, prefix);
  return linear;
}

Linear Linear::load(const Checkpoint& checkpoint, const std::string& prefix, int out_features, int in_features,
                    bool with_bias, DType dtype) {
  const std::string& quantization = checkpoint.quantization().type;
  if (quantization.empty()) return load_dense(checkpoint, prefix, out_features, in_features, with_bias, dtype);
  const QuantType type = quantization == "q8_0" ? QuantType::Q8_0 : QuantType::Q4_0;
  if (in_features % kQuantGroupSize != 0)
    throw Error(checkpoint.dir().string() + ": '" + prefix + "' has " + std::to_string(in_features) +
                " inputs, not a multiple of the quantisation group size 32");
  const TensorInfo& codes = checkpoint.tensor(prefix + ".weight", {out_features, quant_row_bytes(type, in_features)});
  expect_dtype(checkpoint, codes, type == QuantType::Q8_0 ? DType::I8 : DType::U8, "quantised codes");
  const TensorInfo& scales = checkpoint.tensor(prefix + ".weight_scale", {out_features, in_features / kQuantGroupSize});
  expect_dtype(checkpoint, scales, DType::F16, "per-group scales");
  Linear linear;
  linear.storage_ = type == QuantType::Q8_0 ? Storage::Q8_0 : Storage::Q4_0;
  linear.quantized_ = QuantMatrix{type, codes.data, reinterpret_cast<const uint16_t*>(scales.data), out_features,
                                  in_features};
  linear.in_features_ = in_features;
  linear.out_features_ = out_features;
  if (with_bias) linear.load_bias(checkpoint, prefix);
  return linear;
}

void Linear::load_bias(const Checkpoint& checkpoint, const std::string& prefix) {
  const Tensor bias = checkpoint.load_f32(prefix + ".bias", {out_features_});
  bias_.assign(bias.data(), bias.data() + bias.numel());
}

void Linear::forward(const float* x, int rows, float* y) const {
  const float* b = bias_.empty() ? nullptr : bias_.data();
  const bool quantized = storage_ == Storage::Q8_0 || storage_ == Storage::Q4_0;
  if (storage_ == Storage::F32) {
    linear_f32(x, rows, in_features_, f32_->data(), out_features_, b, y);
    return;
  }
  if (rows <= kMaxRowsForGemv) {
    for (int r = 0; r < rows; ++r) {
      const float* x_row = x + size_t(r) * in_features_;
      float* y_row = y + size_t(r) * out_features_;
      if (quantized) {
        gemv_quant(quantized_, x_row, y_row);
      } else {
        gemv_bf16(bf16_, out_features_, in_features_, x_row, y_row);
      }
      if (b) for (int o = 0; o < out_features_; ++o) y_row[o] += b[o];
    }
    return;
  }
  // Prefill: quantised weights go through the int8 GEMM on their stored codes where the CPU has VNNI;
  // bf16 weights through a bf16 GEMM where it has bf16 products; else float32.
  if (quantized && kernels::int8_compute_available()) {
    linear_quant(x, rows, quantized_, b, y);
    return;
  }
  GemmScratch& scratch = gemm_scratch();
  const size_t weight_count = size_t(out_features_) * in_features_;
  if (!quantized && kernels::bf16_compute_available()) {
    scratch.x_bf16.resize(size_t(rows) * in_features_);
    f32_to_bf16_simd(x, scratch.x_bf16.data(), int64_t(scratch.x_bf16.size()));
    linear_bf16(scratch.x_bf16.data(), rows, in_features_, bf16_, out_features_, b, y);
    return;
  }
  scratch.weights_f32.resize(weight_count);
  if (quantized) {
    dequantize_rows_f32(quantized_, 0, out_features_, scratch.weights_f32.data());
  } else {
    convert_to_f32(DType::BF16, bf16_, scratch.weights_f32.data(), weight_count);
  }
  linear_f32(x, rows, in_features_, scratch.weights_f32.data(), out_features_, b, y);
}

void Linear::row(int64_t index, float* out) const {
  switch (storage_) {
    case Storage::F32:
      std::memcpy(out, f32_->data() + index * in_features_, sizeof(float) * in_features_);
      break;
    case Storage::BF16:
      convert_to_f32(DType::BF16, bf16_ + index * in_features_, out, size_t(in_features_));
      break;
    case Storage::Q8_0:
    case Storage::Q4_0:
      dequantize_rows_f32(quantized_, index, 1, out);
      break;
  }
}

}  // namespace fastvlm
