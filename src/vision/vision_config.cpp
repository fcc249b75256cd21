#include "vision/vision_config.h"

namespace fastvlm {

int VisionConfig::total_stride() const {
  int stride = 4;  // the stem
  for (int i = 0; i + 1 < num_stages(); ++i)
    if (has_patch_embed_after(i)) stride *= down_stride;
  return stride;
}

}  // namespace fastvlm
