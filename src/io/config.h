#pragma once
// config.json of a FastVLM checkpoint, parsed into typed structs. Unknown values of keys the engine
// depends on (projector type, aspect-ratio mode, token mixers, ...) are errors naming the key.
#include <filesystem>
#include <string>
#include <vector>

namespace fastvlm {

enum class TokenMixer { RepMixer, Attention };

// FastViT as used by FastVLM (FastViTHD when taken from `mm_vision_tower` alone).
struct VisionConfig {
  std::vector<int> layers{2, 12, 24, 4, 2};
  std::vector<int> embed_dims{96, 192, 384, 768, 1536};
  std::vector<int> mlp_ratios{4, 4, 4, 4, 4};
  std::vector<bool> downsamples{true, true, true, true, true};
  std::vector<TokenMixer> token_mixers{TokenMixer::RepMixer, TokenMixer::RepMixer, TokenMixer::RepMixer,
                                       TokenMixer::Attention, TokenMixer::Attention};
  std::vector<int> pos_emb_kernel{0, 0, 0, 7, 7};  // RepCPE kernel before each stage, 0 = none
  float cls_ratio = 2.0f;                           // conv_exp widens the last stage by this factor
  int down_patch_size = 7;
  int down_stride = 2;
  int repmixer_kernel_size = 3;
  int head_dim = 32;       // attention stages
  int image_size = 1024;   // native input size, from vision_config or the mobileclip_l_<N> suffix
  int projection_dim = 768;

  int num_stages() const { return int(layers.size()); }
  int out_channels() const { return int(embed_dims.back() * cls_ratio); }
  // FastViT puts a stride-`down_stride` PatchEmbed after stage i (not the last) when that stage
  // downsamples or the next stage is wider.
  bool has_patch_embed_after(int stage) const {
    return stage + 1 < num_stages() &&
           (downsamples[stage] || embed_dims[stage] != embed_dims[stage + 1]);
  }
  int total_stride() const;  // stem (4) x down_stride per PatchEmbed: 64 for FastViTHD
};

struct TextConfig {
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;  // hidden_size / num_attention_heads unless given
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  int vocab_size = 0;
  bool tie_word_embeddings = false;
  int max_position_embeddings = 32768;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;  // config.json then generation_config.json
};

enum class CheckpointLayout { LlavaQwen2, FastVlm };

// The record `fastvlm quantize` adds to config.json: "quantization": {"type": "q8_0", "group_size": 32}.
// The LLM linears (lm_head included) are then stored block-quantised (layout in core/quant.h); an empty
// type means a dense checkpoint.
struct QuantizationConfig {
  std::string type;  // "", "q8_0" or "q4_0"
  int group_size = 0;
};

struct ModelConfig {
  CheckpointLayout layout = CheckpointLayout::LlavaQwen2;
  QuantizationConfig quantization;
  TextConfig text;
  VisionConfig vision;
  int mm_hidden_size = 3072;
  std::string mm_projector_type = "mlp2x_gelu";
  std::string image_aspect_ratio = "pad";
  bool mm_use_im_start_end = false;
  bool mm_use_im_patch_token = false;
  int image_token_index = -200;  // the marker id in llava_qwen2 prompts; a real token id in fast_vlm
};

// Parses `dir`/config.json (and generation_config.json when present for eos ids).
ModelConfig load_model_config(const std::filesystem::path& dir);

}  // namespace fastvlm
