#pragma once
// The FastViT image encoder of FastVLM (FastViTHD in the released models), in its re-parameterised
// inference form, computed in float32 on channels-last activations.
//
// Activations are [H, W, C] tensors: every 1x1 convolution is then a plain GEMM over H*W rows, and the
// spatial convolutions run with channels innermost. The network is built from ModelConfig::vision, so
// reduced configurations and any input size that is a multiple of the total stride work.
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"

namespace fastvlm {

// A k x k convolution with padding k/2 on [H, W, C] maps. Dense (groups 1), depthwise
// (groups = in = out) and channel-multiplier convolutions (groups = in, out = m x in) are all this.
struct GroupedConv {
  int in_channels = 0;
  int out_channels = 0;
  int kernel = 1;
  int stride = 1;
  int groups = 1;
  Tensor weight;  // [kernel * kernel, in_channels / groups, out_channels]: output channels innermost
  Tensor bias;    // [out_channels]
};

// A 1x1 convolution or Linear layer: y[rows, out] = x[rows, in] * weight[out, in]^T + bias.
struct Pointwise {
  Tensor weight;  // [out, in]
  Tensor bias;    // [out], empty when the layer has none
};

// Depthwise conv + BatchNorm (folded into the conv at load time) -> 1x1 -> GELU -> 1x1.
struct ConvFFN {
  GroupedConv spatial;
  Pointwise expand;
  Pointwise contract;
};

// x = dwconv(x); x = x + scale * ConvFFN(x).
struct RepMixerBlock {
  GroupedConv mixer;
  ConvFFN ffn;
  Tensor ffn_scale;  // [C]
};

// x = x + scale1 * MHSA(LayerNormChannel(x)); x = x + scale2 * ConvFFN(x).
struct AttentionBlock {
  Tensor norm_weight, norm_bias;  // [C]
  Pointwise qkv;                  // [3C, C], no bias
  Pointwise proj;                 // [C, C] with bias
  int head_dim = 32;
  Tensor attention_scale, ffn_scale;  // [C]
  ConvFFN ffn;
};

using VisionBlock = std::variant<RepMixerBlock, AttentionBlock>;

struct VisionStage {
  std::vector<VisionBlock> blocks;
};

// Strided grouped conv (GELU) then 1x1 (GELU) between stages.
struct PatchEmbed {
  GroupedConv spatial;
  Pointwise pointwise;
};

// Conditional positional encoding: a depthwise conv with its skip connection folded in.
struct RepCPE {
  GroupedConv conv;
};

// One entry of the official `network` ModuleList, in order.
using NetworkModule = std::variant<VisionStage, PatchEmbed, RepCPE>;

class VisionTower {
 public:
  // Called with the name of a module (as in the golden intermediates: "vision.patch_embed",
  // "vision.network.N", "vision.conv_exp") and its output as an [H, W, C] tensor.
  using Observer = std::function<void(const std::string& name, const Tensor& hwc)>;

  // Loads every weight of the tower described by `checkpoint.config().vision`; a missing tensor or a
  // wrong shape is a fastvlm::Error naming the tensor.
  static std::unique_ptr<VisionTower> load(const Checkpoint& checkpoint);

  // pixel_values [1, 3, H, W] (NCHW, as preprocessing produces), H and W multiples of stride().
  // Returns [(H / stride) * (W / stride), out_channels] tokens in row-major order.
  Tensor encode(const Tensor& pixel_values, const Observer& observer = nullptr) const;

  int stride() const { return total_stride_; }
  int out_channels() const { return out_channels_; }

 private:
  VisionTower() = default;

  GroupedConv stem_conv_;       // 3x3 stride 2, 3 -> C
  GroupedConv stem_depthwise_;  // 3x3 stride 2, depthwise
  Pointwise stem_pointwise_;
  std::vector<NetworkModule> network_;
  GroupedConv head_conv_;  // conv_exp: 3x3 grouped, C -> cls_ratio * C
  Pointwise squeeze_, excite_;
  int total_stride_ = 1;
  int out_channels_ = 0;
};

}  // namespace fastvlm
