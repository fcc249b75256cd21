#pragma once
// The FastViT image encoder of FastVLM (FastViTHD in the released models), in its re-parameterised
// inference form, on channels-last activations.
//
// Activations are [H, W, C] tensors: every 1x1 convolution is then a plain GEMM over H*W rows, and the
// spatial convolutions run with channels innermost. The network is built from a VisionConfig, so
// reduced configurations and any input size that is a multiple of the total stride work.
//
// Three compute types: F32 (the accuracy reference); Bf16, where every GEMM (1x1 convs, attention
// linears and matmuls) takes bfloat16 operands and accumulates in float32 on oneDNN (AMX tiles where
// present); and Int8 (opt-in, never the default), which is Bf16 except that the ConvFFN 1x1 convs and
// the attention's qkv / proj Linears (98% of the 1x1 multiply-accumulates) multiply signed 8-bit codes on
// oneDNN's VNNI GEMM: weights quantised per output channel at load, activations per pixel (token) with
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
#include "io/checkpoint.h"
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

enum class VisionCompute { F32, Bf16, Int8 };

// Bf16 when the kernels can compute in bfloat16 (kernels::bf16_compute_available()), else F32.
VisionCompute default_vision_compute();

// A 1x1 convolution or Linear layer: y[rows, out] = x[rows, in] * weight[out, in]^T + bias. Only the
// weight copy the compute type multiplies with is kept.
struct Pointwise {
  int64_t in = 0, out = 0;
  Tensor weight;                      // [out, in] float32 (F32 compute)
  std::vector<uint16_t> weight_bf16;  // [out, in] bfloat16 bits (Bf16 compute; Int8's stem / PatchEmbed 1x1s)
  std::vector<int8_t> weight_s8;      // [out, in] codes (Int8 compute): weight = code * weight_scales[o]
  std::vector<float> weight_scales;   // [out]
  Tensor bias;                        // [out], empty when the layer has none
};

// Depthwise conv + BatchNorm (folded into the conv at load time) -> 1x1 -> GELU -> 1x1.
struct ConvFFN {
  GroupedConv spatial;
  Pointwise expand;
  Pointwise contract;  // with the block's layer scale folded in (its rows and bias scaled)
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
  Pointwise qkv;                  // [3C, C], no bias
  Pointwise proj;                 // [C, C] with bias
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
  Pointwise pointwise;
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

  // Loads every weight of the tower `config` describes, prepared for `compute`;
  // a missing tensor or a wrong shape is a fastvlm::Error naming the tensor. Bf16 on a CPU without
  // AVX512-BF16, or Int8 without AVX512-BF16 and AVX512-VNNI, is an Error too.
  static std::unique_ptr<VisionTower> load(const Checkpoint& checkpoint, const VisionConfig& config,
                                           VisionCompute compute = default_vision_compute());
  ~VisionTower();

  Tensor encode(const Tensor& pixel_values, const Observer& observer = nullptr) const override;
  int stride() const override { return total_stride_; }
  int out_channels() const override { return out_channels_; }
  VisionCompute compute() const { return compute_; }

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
  VisionCompute compute_ = VisionCompute::F32;
  // Activation buffers kept between encodes (no page faults after the first image); one encode at a
  // time uses them.
  mutable std::mutex scratch_mutex_;
  mutable std::unique_ptr<VisionScratch> scratch_;
};

}  // namespace fastvlm
