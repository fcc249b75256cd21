#pragma once
// The multimodal projector of FastVLM: maps vision tokens [N, mm_hidden_size] into the LLM's embedding
// space [N, hidden_size]. Only `mlp2x_gelu` (Linear -> GELU(erf) -> Linear) exists in the releases.
#include <memory>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "nn/linear.h"

namespace fastvlm {

class Projector {
 public:
  // model.mm_projector.{0,2}.{weight,bias} for `input_size` vision channels and a `hidden_size` LLM.
  // Throws fastvlm::Error naming the tensor when a weight is missing or has the wrong shape.
  static std::unique_ptr<Projector> load(const Checkpoint& checkpoint, int64_t input_size, int64_t hidden_size);

  // image_features [N, mm_hidden_size] -> [N, hidden_size]
  Tensor forward(const Tensor& image_features) const;

  int64_t input_size() const { return first_.in_features(); }
  int64_t output_size() const { return second_.out_features(); }

 private:
  Projector() = default;
  Linear first_;   // mm_hidden -> hidden, float32 (the projector is 0.3% of an encode's work)
  Linear second_;  // hidden -> hidden
};

}  // namespace fastvlm
