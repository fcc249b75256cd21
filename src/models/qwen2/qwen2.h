#pragma once
// Qwen2 (`model_type: qwen2`, Qwen2ForCausalLM: Qwen2 / Qwen2.5 Instruct, QwQ, MiMo): the LLaMA-family
// graph with q/k/v biases, lm_head tied or not.
#include "io/config_keys.h"
#include "llm/text_config.h"
#include "models/model.h"

namespace fastvlm {

// The Qwen2 keys of a config object (the top level of a Qwen2 or llava_qwen2 config, `text_config` of a
// fast_vlm one). Sliding-window attention (`use_sliding_window: true`) is refused: it is not implemented.
TextConfig parse_qwen2_config(const ConfigKeys& keys);

const Architecture& qwen2_architecture();

}  // namespace fastvlm
