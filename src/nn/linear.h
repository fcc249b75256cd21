#pragma once
// y = x·Wᵀ + b, whatever the weight's storage: float32, bfloat16 (usually used in place in the
// checkpoint's mapping), or Q8_0/Q4_0 blocks of a `fastvlm quantize`d checkpoint. The layer picks the
// product itself: a GEMV per row for a few rows (decode), a GEMM for many (prefill), an int8 product on
// the stored codes where the kernels offer it.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"
#include "core/tensor.h"
#include "io/checkpoint.h"

namespace fastvlm {

class Linear {
 public:
  enum class Storage { F32, BF16, Q8_0, Q4_0 };

  Linear() = default;
  // `prefix`.weight ([out, in], any float type in the checkpoint, held as `dtype`: F32 or BF16) and, with
  // `with_bias`, `prefix`.bias. Throws fastvlm::Error naming a missing or misshapen tensor (a bias the
  // config promises included).
  static Linear load_dense(const Checkpoint& checkpoint, const std::string& prefix, int out_features,
                           int in_features, bool with_bias, DType dtype);
  // The same, but block-quantised as stored when the checkpoint is (its model's linears are).
  static Linear load(const Checkpoint& checkpoint, const std::string& prefix, int out_features, int in_features,
                     bool with_bias, DType dtype);

  // y[rows, out_features] = x[rows, in_features]·Wᵀ + b.
  void forward(const float* x, int rows, float* y) const;
  // out[in_features] = row `index` of W as floats (embedding lookup through the same storage).
  void row(int64_t index, float* out) const;

  int in_features() const { return in_features_; }
  int out_features() const { return out_features_; }
  Storage storage() const { return storage_; }

 private:
  void load_bias(const Checkpoint& checkpoint, const std::string& prefix);

  Storage storage_ = Storage::F32;
  std::shared_ptr<const Tensor> f32_;  // F32: [out, in]
  const uint16_t* bf16_ = nullptr;     // BF16: [out, in], usually in the mmap
  std::shared_ptr<const std::vector<uint16_t>> converted_bf16_;  // owns bf16_ when the checkpoint was not bf16
  QuantMatrix quantized_;              // Q8_0/Q4_0: codes and scales in the mmap
  std::vector<float> bias_;            // [out], empty when the layer has none
  int in_features_ = 0;
  int out_features_ = 0;
};

}  // namespace fastvlm
