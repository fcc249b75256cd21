#pragma once
// LLaMA (`model_type: llama`, LlamaForCausalLM: the Llama 2/3 family, DeepSeek-Math/Coder,
// DeepSeek-Prover-V2): the LLaMA-family graph with optional attention and MLP biases, an explicit
// head_dim, and RoPE scaling none / linear / llama3.
#include "io/config_keys.h"
#include "llm/text_config.h"
#include "models/model.h"

namespace fastvlm {

// Keys that would change the math and are not implemented are refused, naming the key.
TextConfig parse_llama_config(const ConfigKeys& keys);

const Architecture& llama_architecture();

}  // namespace fastvlm
