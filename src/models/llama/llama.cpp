#include "models/llama/llama.h"

#include "models/text_model.h"

namespace fastvlm {

TextConfig parse_llama_config(const ConfigKeys& keys) {
  TextConfig config = parse_text_config(keys);
  config.qkv_bias = config.o_bias = keys.boolean("attention_bias", false);
  config.mlp_bias = keys.boolean("mlp_bias", false);
  // pretraining_tp > 1 only splits the same products into slices in the reference: nothing to do.
  return config;
}

const Architecture& llama_architecture() {
  static const Architecture architecture =
      text_architecture("llama", {"llama"}, {"LlamaForCausalLM"}, parse_llama_config);
  return architecture;
}

}  // namespace fastvlm
