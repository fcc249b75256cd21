#include "models/qwen2/qwen2.h"

#include "models/text_model.h"

namespace fastvlm {

TextConfig parse_qwen2_config(const ConfigKeys& keys) {
  TextConfig config = parse_text_config(keys);
  config.qkv_bias = true;
  if (keys.boolean("use_sliding_window", false))
    keys.fail("use_sliding_window", "false (sliding-window attention is not implemented)");
  return config;
}

const Architecture& qwen2_architecture() {
  static const Architecture architecture =
      text_architecture("qwen2", {"qwen2"}, {"Qwen2ForCausalLM"}, parse_qwen2_config);
  return architecture;
}

}  // namespace fastvlm
