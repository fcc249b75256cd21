#pragma once
// The FastViT image encoder of FastVLM (FastViTHD in the released models), in its re-parameterised
// inference form, on channels-last activations.
//
// Activations are [H, W, C] tensors: every 1x1 convolution is then a plain GEMM over H*W rows, and the
// spatial convolutions run with channels innermost. The network is built from a VisionConfig, so
// reduced configurations and any input size that is a multiple of the total stride work.
//
// Three precisions: F32 (the accuracy reference); Bf16, where every GEMM (1x1 convs, attention
// linears and matmuls) takes bfloat16 operands and accumulates in float32 on oneDNN (AMX tiles where
// present); and Int8, which is Bf16 (F32 on a CPU without bfloat16 products) except that the ConvFFN 1x1
// convs and the attention's qkv / proj Linears (98% of the 1x1 multiply-accumulates) multiply signed 8-bit
// codes (AMX tiles where present, else oneDNN's VNNI brgemm, else 16-bit pairs on AVX2) on weights
// quantised per output channel and packed at load, activations quantised per pixel (token) with
// that pixel's own scale at run time, exact int32 products, and dequantisation + bias + GELU / residual
// add in our own epilogues. In all, the residual stream and the spatial convolutions stay float32,
// BatchNorm and the layer scales are folded into the adjacent weights at load, and GELU / residual adds
// are fused into the GEMM epilogues.
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "core/tensor.h"
#include "fastvlm/precision.hpp"
#include "io/checkpoint.h"
#include "nn/linear.h"
#include "vision/vision_config.h"
#include "vision/vision_encoder.h"

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

// Bf16 when the kernels can compute in bfloat16 (kernels::bf16_compute_available()), else F32.
Precision default_vision_precision();

// Depthwise conv + BatchNorm (folded into the conv at load time) -> 1x1 -> GELU -> 1x1.
struct ConvFFN {
  GroupedConv spatial;
  Linear expand;    // 1x1 convs: Linears over the map's pixels
  Linear contract;  // with the block's layer scale folded in (its rows and bias scaled)
};

// x = dwconv(x); x = x + scale * ConvFFN(x), the scale folded into ffn.contract.
struct RepMixerBlock {
  GroupedConv mixer;
  ConvFFN ffn;
};

// x = x + scale1 * MHSA(LayerNormChannel(x)); x = x + scale2 * ConvFFN(x). scale1 is folded into proj,
// scale2 into ffn.contract, and the attention's 1/sqrt(head_dim) into the q rows of qkv.
struct AttentionBlock {
  Tensor norm_weight, norm_bias;  // [C]
  Linear qkv;                     // [3C, C], no bias
  Linear proj;                    // [C, C] with bias
  int head_dim = 32;
  ConvFFN ffn;
};

using VisionBlock = std::variant<RepMixerBlock, AttentionBlock>;

struct VisionStage {
  std::vector<VisionBlock> blocks;
};

// Strided grouped conv (GELU) then 1x1 (GELU) between stages.
struct PatchEmbed {
  GroupedConv spatial;
  Linear pointwise;
};

// Conditional positional encoding: a depthwise conv with its skip connection folded in.
struct RepCPE {
  GroupedConv conv;
};

// One entry of the official `network` ModuleList, in order.
using NetworkModule = std::variant<VisionStage, PatchEmbed, RepCPE>;

// The activation buffers of an encode (defined in fastvit.cpp).
struct VisionScratch;

// Multiply-accumulates of one encode at image_size x image_size (convolutions, linears and attention
// products; norms and activations not counted), for reporting achieved throughput. FastViTHD: 243.4 G at
// 1024, 59.6 G at 512, as counted with forward hooks on the official model.
int64_t vision_macs(const VisionConfig& config, int image_size);

class VisionTower final : public VisionEncoder {
 public:
  // Module names: "vision.patch_embed", "vision.network.N", "vision.conv_exp".
  using Observer = VisionEncoder::Observer;

  // Loads every weight of the tower `config` describes, prepared for `precision` (F32, Bf16 or Int8; Auto
  // is the caller's to resolve); a missing tensor or a wrong shape is a fastvlm::Error naming the tensor.
  // Bf16 on a CPU without AVX512-BF16, or Int8 without AVX2, is an Error too.
  static std::unique_ptr<VisionTower> load(const Checkpoint& checkpoint, const VisionConfig& config,
                                           Precision precision = default_vision_precision());
  ~VisionTower();

  Tensor encode(const Tensor& pixel_values, const Observer& observer = nullptr) const override;
  int stride() const override { return total_stride_; }
  int out_channels() const override { return out_channels_; }
  Precision precision() const { return precision_; }

 private:
  VisionTower() = default;

  GroupedConv stem_conv_;       // 3x3 stride 2, 3 -> C
  GroupedConv stem_depthwise_;  // 3x3 stride 2, depthwise
  Linear stem_pointwise_;
  std::vector<NetworkModule> network_;
  GroupedConv head_conv_;  // conv_exp: 3x3 grouped, C -> cls_ratio * C
  Linear squeeze_, excite_;
  int total_stride_ = 1;
  int out_channels_ = 0;
  Precision precision_ = Precision::F32;
  // Activation buffers kept between encodes (no page faults after the first image); one encode at a
  // time uses them.
  mutable std::mutex scratch_mutex_;
  mutable std::unique_ptr<VisionScratch> scratch_;
};

}  // namespace fastvlm
