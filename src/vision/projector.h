#pragma once
// The multimodal projector of FastVLM: maps vision tokens [N, mm_hidden_size] into the LLM's embedding
// space [N, hidden_size]. Only `mlp2x_gelu` (Linear -> GELU(erf) -> Linear) exists in the releases.
#include <memory>

#include "core/tensor.h"
#include "io/checkpoint.h"

namespace fastvlm {

class Projector {
 public:
  // model.mm_projector.{0,2}.{weight,bias} for `input_size` vision channels and a `hidden_size` LLM.
  // Throws fastvlm::Error naming the tensor when a weight is missing or has the wrong shape.
  static std::unique_ptr<Projector> load(const Checkpoint& checkpoint, int64_t input_size, int64_t hidden_size);

  // image_features [N, mm_hidden_size] -> [N, hidden_size]
  Tensor forward(const Tensor& image_features) const;

  int64_t input_size() const { return first_weight_.dim(1); }
  int64_t output_size() const { return second_weight_.dim(0); }

 private:
  Projector() = default;
  Tensor first_weight_, first_bias_;    // [hidden, mm_hidden], [hidden]
  Tensor second_weight_, second_bias_;  // [hidden, hidden], [hidden]
};

}  // namespace fastvlm
