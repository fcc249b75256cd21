#pragma once
// What the engine needs of an image encoder: preprocessed pixels in, a grid of feature tokens out. FastViT
// (vision/fastvit.h) implements it.
#include <functional>
#include <string>

#include "core/tensor.h"

namespace fastvlm {

class VisionEncoder {
 public:
  // Called with the name of a module (as in the golden intermediates, e.g. "vision.network.N") and its
  // output as an [H, W, C] tensor.
  using Observer = std::function<void(const std::string& name, const Tensor& hwc)>;

  virtual ~VisionEncoder() = default;
  // pixel_values [1, 3, H, W] (NCHW, as preprocessing produces), H and W multiples of stride().
  // Returns [(H / stride) * (W / stride), out_channels] tokens in row-major order.
  virtual Tensor encode(const Tensor& pixel_values, const Observer& observer = nullptr) const = 0;
  virtual int stride() const = 0;
  virtual int out_channels() const = 0;
};

}  // namespace fastvlm
