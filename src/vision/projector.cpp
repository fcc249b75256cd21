#include "vision/projector.h"

#include "core/error.h"
#include "kernels/activations.h"
#include "kernels/gemm.h"

namespace fastvlm {

std::unique_ptr<Projector> Projector::load(const Checkpoint& checkpoint) {
  const ModelConfig& config = checkpoint.config();
  if (config.mm_projector_type != "mlp2x_gelu")
    throw Error((checkpoint.dir() / "config.json").string() + ": key 'mm_projector_type': expected \"mlp2x_gelu\", got \"" +
                config.mm_projector_type + "\"");
  const int64_t in = config.mm_hidden_size, hidden = config.text.hidden_size;
  std::unique_ptr<Projector> projector(new Projector());
  projector->first_weight_ = checkpoint.load_f32("model.mm_projector.0.weight", {hidden, in});
  projector->first_bias_ = checkpoint.load_f32("model.mm_projector.0.bias", {hidden});
  projector->second_weight_ = checkpoint.load_f32("model.mm_projector.2.weight", {hidden, hidden});
  projector->second_bias_ = checkpoint.load_f32("model.mm_projector.2.bias", {hidden});
  return projector;
}

Tensor Projector::forward(const Tensor& image_features) const {
  if (image_features.rank() != 2 || image_features.dim(1) != input_size())
    throw Error("projector: image features must be [N, " + std::to_string(input_size()) + "], got " +
                shape_string(image_features.shape()));
  const int64_t tokens = image_features.dim(0), hidden = output_size();
  Tensor activated({tokens, hidden});
  linear_f32(image_features.data(), tokens, input_size(), first_weight_.data(), hidden, first_bias_.data(),
             activated.data());
  gelu_simd(activated.data(), activated.numel());
  Tensor output({tokens, hidden});
  linear_f32(activated.data(), tokens, hidden, second_weight_.data(), hidden, second_bias_.data(), output.data());
  return output;
}

}  // namespace fastvlm
