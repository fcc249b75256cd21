#include "vision/projector.h"

#include "core/error.h"
#include "kernels/activations.h"

namespace fastvlm {

std::unique_ptr<Projector> Projector::load(const Checkpoint& checkpoint, int64_t in, int64_t hidden) {
  std::unique_ptr<Projector> projector(new Projector());
  projector->first_ = Linear::load_dense(checkpoint, "model.mm_projector.0", int(hidden), int(in), true, WeightType::F32);
  projector->second_ = Linear::load_dense(checkpoint, "model.mm_projector.2", int(hidden), int(hidden), true, WeightType::F32);
  return projector;
}

Tensor Projector::forward(const Tensor& image_features) const {
  if (image_features.rank() != 2 || image_features.dim(1) != input_size())
    throw Error("projector: image features must be [N, " + std::to_string(input_size()) + "], got " +
                shape_string(image_features.shape()));
  const int64_t tokens = image_features.dim(0), hidden = output_size();
  Tensor activated({tokens, hidden});
  first_.forward(image_features.data(), int(tokens), activated.data());
  gelu_simd(activated.data(), activated.numel());
  Tensor output({tokens, hidden});
  second_.forward(activated.data(), int(tokens), output.data());
  return output;
}

}  // namespace fastvlm
