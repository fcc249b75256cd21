#pragma once
// The shape of a FastViT image encoder (FastViTHD in the released FastVLM models): blocks, widths and
// token mixers per stage. The FastVLM family reads it from config.json (src/models/fastvlm/).
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

}  // namespace fastvlm
