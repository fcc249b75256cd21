#pragma once
// The configuration of a LLaMA-family decoder (Qwen2, LLaMA and the LLM half of FastVLM): pre-norm layers
// of grouped-query attention with rotary positions and a SiLU-gated MLP. The families differ only in
// which linears carry biases, in RoPE scaling and in whether lm_head is tied to the embedding; each
// family's own folder under src/models/ reads its config.json into this.
#include <string>
#include <vector>

#include "io/config_keys.h"

namespace fastvlm {

// Rotary position frequencies: inv[i] = theta^(-2i/head_dim), then rescaled as Hugging Face's
// `rope_type` says.
struct RopeConfig {
  enum class Type { Default, Linear, Llama3 };
  Type type = Type::Default;
  double theta = 10000;
  double factor = 1;  // Linear and Llama3
  double low_freq_factor = 1, high_freq_factor = 4;  // Llama3
  int original_max_position_embeddings = 8192;       // Llama3
};

struct TextConfig {
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;  // hidden_size / num_attention_heads unless given
  float rms_norm_eps = 1e-6f;
  RopeConfig rope;
  int vocab_size = 0;
  bool tie_word_embeddings = false;
  int max_position_embeddings = 32768;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;  // config.json then generation_config.json
  // Which linears have a bias: Qwen2 has q/k/v biases; LLaMA's attention_bias adds all four attention
  // biases, mlp_bias the three MLP ones.
  bool qkv_bias = false, o_bias = false, mlp_bias = false;
};

// The keys every LLaMA-family config shares: dimensions, norm epsilon, vocabulary, token ids, hidden_act
// (silu only), and RoPE from `rope_theta` + `rope_scaling` or from transformers 5's `rope_parameters`.
// A RoPE base that cannot be found, a rope type other than default/linear/llama3, or an unknown key in
// the RoPE record is an error naming the key: never a silent default. Biases are left to the family.
TextConfig parse_text_config(const ConfigKeys& keys);

// Adds the eos ids of `dir`/generation_config.json (when present) to config.eos_token_ids.
void read_generation_eos_ids(const std::filesystem::path& dir, TextConfig& config);

// The head_dim / 2 rotary inverse frequencies of `rope`, in double so that position x frequency stays exact
// to float precision even tens of thousands of positions in.
std::vector<double> rope_inverse_frequencies(const RopeConfig& rope, int head_dim);

}  // namespace fastvlm
