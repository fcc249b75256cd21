#pragma once
// FastVLM (`model_type: llava_qwen2`, the Apple release; `fast_vlm`, the transformers-native conversion):
// a FastViTHD image encoder, an mlp2x_gelu projector and a Qwen2 decoder, prompted with the `qwen_2`
// conversation template ("fastvlm" chat format).
#include "models/model.h"

namespace fastvlm {

const Architecture& fastvlm_architecture();

}  // namespace fastvlm
