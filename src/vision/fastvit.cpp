#include "vision/fastvit.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/gemm.h"
#include "core/ops.h"

namespace fastvlm {
namespace {

// Every vision tensor of the llava_qwen2 release lives under this prefix (the checkpoint translates
// other layouts to it).
const std::string kPrefix = "model.vision_tower.vision_tower.model.";

constexpr float kBatchNormEps = 1e-5f;
constexpr float kLayerNormEps = 1e-5f;
// SEBlock of MobileOne reduces the channels by this factor (rd_ratio).
constexpr double kSqueezeRatio = 0.0625;
// ConvFFN's depthwise conv has a fixed kernel in FastViT, whatever the stage.
constexpr int kConvFFNKernel = 7;

enum class Activation { None, Gelu };

std::string network_name(int index) { return "network." + std::to_string(index); }

// ---------------------------------------------------------------------------------------------------
// Loading

Tensor load(const Checkpoint& checkpoint, const std::string& name, const Shape& shape) {
  return checkpoint.load_f32(kPrefix + name, shape);
}

// `name` is the module (without ".weight"); the stored PyTorch weight is [out, in/groups, k, k].
GroupedConv load_grouped_conv(const Checkpoint& checkpoint, const std::string& name, int in_channels,
                              int out_channels, int kernel, int stride, int groups, bool has_bias = true) {
  if (in_channels % groups != 0 || out_channels % groups != 0)
    throw Error(checkpoint.dir().string() + ": vision module '" + kPrefix + name + "' needs " +
                std::to_string(in_channels) + " input and " + std::to_string(out_channels) +
                " output channels divisible into " + std::to_string(groups) + " groups (check vision_config)");
  GroupedConv conv;
  conv.in_channels = in_channels;
  conv.out_channels = out_channels;
  conv.kernel = kernel;
  conv.stride = stride;
  conv.groups = groups;
  const int in_per_group = in_channels / groups;
  const Tensor stored = load(checkpoint, name + ".weight", {out_channels, in_per_group, kernel, kernel});
  // Re-order to [tap, input-in-group, out] so that one tap of one pixel is a contiguous channel run.
  conv.weight = Tensor({int64_t(kernel) * kernel, in_per_group, out_channels});
  const int taps = kernel * kernel;
  for (int o = 0; o < out_channels; ++o)
    for (int j = 0; j < in_per_group; ++j)
      for (int t = 0; t < taps; ++t)
        conv.weight.data()[(int64_t(t) * in_per_group + j) * out_channels + o] =
            stored.data()[(int64_t(o) * in_per_group + j) * taps + t];
  conv.bias = has_bias ? load(checkpoint, name + ".bias", {out_channels}) : Tensor::zeros({out_channels});
  return conv;
}

GroupedConv load_depthwise(const Checkpoint& checkpoint, const std::string& name, int channels, int kernel) {
  return load_grouped_conv(checkpoint, name, channels, channels, kernel, 1, channels);
}

// A Linear layer, stored [out, in].
Pointwise load_linear(const Checkpoint& checkpoint, const std::string& name, int in, int out, bool has_bias) {
  Pointwise layer;
  layer.weight = load(checkpoint, name + ".weight", {out, in});
  if (has_bias) layer.bias = load(checkpoint, name + ".bias", {out});
  return layer;
}

// A 1x1 Conv2d with bias, stored [out, in, 1, 1]: the same matrix as a Linear.
Pointwise load_conv1x1(const Checkpoint& checkpoint, const std::string& name, int in, int out) {
  Pointwise layer;
  layer.weight = load(checkpoint, name + ".weight", {out, in, 1, 1});
  layer.weight.reshape({out, in});
  layer.bias = load(checkpoint, name + ".bias", {out});
  return layer;
}

// A layer scale stored [C, 1, 1], used as a per-channel vector.
Tensor load_layer_scale(const Checkpoint& checkpoint, const std::string& name, int channels) {
  Tensor scale = load(checkpoint, name, {channels, 1, 1});
  scale.reshape({channels});
  return scale;
}

ConvFFN load_conv_ffn(const Checkpoint& checkpoint, const std::string& name, int channels, int hidden) {
  ConvFFN ffn;
  ffn.spatial = load_grouped_conv(checkpoint, name + ".conv.conv", channels, channels, kConvFFNKernel, 1, channels,
                                  /*has_bias=*/false);
  // The release keeps BatchNorm (inference statistics) after the depthwise conv; it is an affine map
  // per channel, so it folds exactly into that conv's weights and bias.
  const Tensor gamma = load(checkpoint, name + ".conv.bn.weight", {channels});
  const Tensor beta = load(checkpoint, name + ".conv.bn.bias", {channels});
  const Tensor mean = load(checkpoint, name + ".conv.bn.running_mean", {channels});
  const Tensor var = load(checkpoint, name + ".conv.bn.running_var", {channels});
  const int64_t taps = int64_t(ffn.spatial.kernel) * ffn.spatial.kernel;
  for (int c = 0; c < channels; ++c) {
    const float factor = gamma.data()[c] / std::sqrt(var.data()[c] + kBatchNormEps);
    for (int64_t t = 0; t < taps; ++t) ffn.spatial.weight.data()[t * channels + c] *= factor;
    ffn.spatial.bias.data()[c] = beta.data()[c] - mean.data()[c] * factor;
  }
  ffn.expand = load_conv1x1(checkpoint, name + ".fc1", channels, hidden);
  ffn.contract = load_conv1x1(checkpoint, name + ".fc2", hidden, channels);
  return ffn;
}

VisionBlock load_block(const Checkpoint& checkpoint, const VisionConfig& config, int stage, const std::string& name) {
  const int channels = config.embed_dims[stage];
  const int hidden = channels * config.mlp_ratios[stage];
  if (config.token_mixers[stage] == TokenMixer::RepMixer) {
    RepMixerBlock block;
    block.mixer = load_depthwise(checkpoint, name + ".token_mixer.reparam_conv", channels, config.repmixer_kernel_size);
    block.ffn = load_conv_ffn(checkpoint, name + ".convffn", channels, hidden);
    block.ffn_scale = load_layer_scale(checkpoint, name + ".layer_scale", channels);
    return block;
  }
  if (channels % config.head_dim != 0)
    throw Error(checkpoint.dir().string() + ": attention stage " + std::to_string(stage) + " has " +
                std::to_string(channels) + " channels, not a multiple of head_dim " + std::to_string(config.head_dim));
  AttentionBlock block;
  block.norm_weight = load(checkpoint, name + ".norm.weight", {channels});
  block.norm_bias = load(checkpoint, name + ".norm.bias", {channels});
  block.qkv = load_linear(checkpoint, name + ".token_mixer.qkv", channels, 3 * channels, /*has_bias=*/false);
  block.proj = load_linear(checkpoint, name + ".token_mixer.proj", channels, channels, /*has_bias=*/true);
  block.head_dim = config.head_dim;
  block.attention_scale = load_layer_scale(checkpoint, name + ".layer_scale_1", channels);
  block.ffn_scale = load_layer_scale(checkpoint, name + ".layer_scale_2", channels);
  block.ffn = load_conv_ffn(checkpoint, name + ".convffn", channels, hidden);
  return block;
}

void check_vision_config(const Checkpoint& checkpoint, const VisionConfig& config) {
  const size_t stages = config.layers.size();
  if (stages == 0 || config.embed_dims.size() != stages || config.mlp_ratios.size() != stages ||
      config.downsamples.size() != stages || config.token_mixers.size() != stages ||
      config.pos_emb_kernel.size() != stages)
    throw Error(checkpoint.dir().string() + ": vision_config: layers, embed_dims, mlp_ratios, downsamples, "
                "token_mixers and pos_embs must all have one entry per stage");
}

// ---------------------------------------------------------------------------------------------------
// Kernels on [H, W, C] maps

// Adds one kernel tap of one input pixel into one output pixel. The depthwise case (by far the most
// common) is a straight multiply-add over contiguous channels that the compiler vectorises.
inline void accumulate_tap(const GroupedConv& conv, const float* __restrict tap_weight, const float* __restrict src,
                           float* __restrict dst) {
  const int in_per_group = conv.in_channels / conv.groups;
  const int out_per_group = conv.out_channels / conv.groups;
  if (in_per_group == 1 && out_per_group == 1) {
    for (int c = 0; c < conv.out_channels; ++c) dst[c] += tap_weight[c] * src[c];
    return;
  }
  for (int g = 0; g < conv.groups; ++g) {
    float* group_dst = dst + int64_t(g) * out_per_group;
    for (int j = 0; j < in_per_group; ++j) {
      const float value = src[int64_t(g) * in_per_group + j];
      const float* w = tap_weight + int64_t(j) * conv.out_channels + int64_t(g) * out_per_group;
      for (int o = 0; o < out_per_group; ++o) group_dst[o] += w[o] * value;
    }
  }
}

Tensor run_conv(const GroupedConv& conv, const Tensor& input, Activation activation) {
  const int64_t in_h = input.dim(0), in_w = input.dim(1);
  const int kernel = conv.kernel, stride = conv.stride, pad = conv.kernel / 2;
  const int64_t out_h = (in_h + 2 * pad - kernel) / stride + 1;
  const int64_t out_w = (in_w + 2 * pad - kernel) / stride + 1;
  const int64_t in_c = conv.in_channels, out_c = conv.out_channels;
  const int64_t tap_stride = int64_t(conv.in_channels / conv.groups) * out_c;
  Tensor output({out_h, out_w, out_c});
  const float* in = input.data();
  float* out = output.data();

#pragma omp parallel for schedule(static)
  for (int64_t oy = 0; oy < out_h; ++oy) {
    const int64_t y0 = oy * stride - pad;
    const int ky_begin = int(std::max<int64_t>(0, -y0)), ky_end = int(std::min<int64_t>(kernel, in_h - y0));
    for (int64_t ox = 0; ox < out_w; ++ox) {
      const int64_t x0 = ox * stride - pad;
      const int kx_begin = int(std::max<int64_t>(0, -x0)), kx_end = int(std::min<int64_t>(kernel, in_w - x0));
      float* dst = out + (oy * out_w + ox) * out_c;
      std::copy(conv.bias.data(), conv.bias.data() + out_c, dst);
      for (int ky = ky_begin; ky < ky_end; ++ky)
        for (int kx = kx_begin; kx < kx_end; ++kx)
          accumulate_tap(conv, conv.weight.data() + (ky * kernel + kx) * tap_stride,
                         in + ((y0 + ky) * in_w + (x0 + kx)) * in_c, dst);
      if (activation == Activation::Gelu)
        for (int64_t c = 0; c < out_c; ++c) dst[c] = gelu(dst[c]);
    }
  }
  return output;
}

// Applies a 1x1 conv / Linear to the last axis, keeping the leading ones.
Tensor run_pointwise(const Pointwise& layer, const Tensor& input, Activation activation) {
  const int64_t in = layer.weight.dim(1), out = layer.weight.dim(0);
  const int64_t rows = input.numel() / in;
  Shape shape = input.shape();
  shape.back() = out;
  Tensor output(shape);
  linear_f32(input.data(), rows, in, layer.weight.data(), out, layer.bias.empty() ? nullptr : layer.bias.data(),
             output.data());
  if (activation == Activation::Gelu) gelu_inplace(output.data(), output.numel());
  return output;
}

// x += scale (per channel) * update
void add_scaled(Tensor& x, const Tensor& update, const Tensor& scale) {
  const int64_t channels = scale.numel(), pixels = x.numel() / channels;
  float* dst = x.data();
  const float* src = update.data();
  const float* s = scale.data();
#pragma omp parallel for schedule(static) if (pixels * channels > 65536)
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t c = 0; c < channels; ++c) dst[p * channels + c] += s[c] * src[p * channels + c];
}

Tensor run_conv_ffn(const ConvFFN& ffn, const Tensor& x) {
  const Tensor mixed = run_conv(ffn.spatial, x, Activation::None);
  const Tensor hidden = run_pointwise(ffn.expand, mixed, Activation::Gelu);
  return run_pointwise(ffn.contract, hidden, Activation::None);
}

// LayerNormChannel: normalises each pixel over its channels (biased variance).
Tensor layer_norm_channels(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const int64_t channels = weight.numel(), pixels = x.numel() / channels;
  Tensor output(x.shape());
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pixels; ++p) {
    const float* src = x.data() + p * channels;
    float* dst = output.data() + p * channels;
    double sum = 0;
    for (int64_t c = 0; c < channels; ++c) sum += src[c];
    const double mean = sum / double(channels);
    double squares = 0;
    for (int64_t c = 0; c < channels; ++c) squares += (src[c] - mean) * (src[c] - mean);
    const float inv_std = float(1.0 / std::sqrt(squares / double(channels) + kLayerNormEps));
    for (int64_t c = 0; c < channels; ++c)
      dst[c] = weight.data()[c] * ((src[c] - float(mean)) * inv_std) + bias.data()[c];
  }
  return output;
}

// Multi-head self-attention over all H*W tokens of a normalised [H, W, C] map.
Tensor run_attention(const AttentionBlock& block, const Tensor& normed) {
  const int64_t channels = normed.dim(-1), tokens = normed.numel() / channels;
  const int64_t head_dim = block.head_dim, heads = channels / head_dim;
  // Row layout of qkv: [q | k | v], each split into heads of head_dim.
  Tensor qkv = run_pointwise(block.qkv, normed, Activation::None);
  const int64_t row = 3 * channels;
  // The reference scales q before the product (q * scale) @ k^T.
  const float scale = 1.0f / std::sqrt(float(head_dim));
#pragma omp parallel for schedule(static) if (tokens * channels > 65536)
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t c = 0; c < channels; ++c) qkv.data()[t * row + c] *= scale;

  Tensor mixed({tokens, channels});
  Tensor scores({tokens, tokens});
  for (int64_t h = 0; h < heads; ++h) {
    const float* q = qkv.data() + h * head_dim;
    const float* k = q + channels;
    const float* v = q + 2 * channels;
    gemm_f32(/*b_transposed=*/true, tokens, tokens, head_dim, q, row, k, row, scores.data(), tokens);
    softmax_rows(scores.data(), tokens, tokens);
    gemm_f32(/*b_transposed=*/false, tokens, head_dim, tokens, scores.data(), tokens, v, row,
             mixed.data() + h * head_dim, channels);
  }
  Tensor projected = run_pointwise(block.proj, mixed, Activation::None);
  projected.reshape(normed.shape());
  return projected;
}

void run_block(const RepMixerBlock& block, Tensor& x) {
  x = run_conv(block.mixer, x, Activation::None);
  add_scaled(x, run_conv_ffn(block.ffn, x), block.ffn_scale);
}

void run_block(const AttentionBlock& block, Tensor& x) {
  add_scaled(x, run_attention(block, layer_norm_channels(x, block.norm_weight, block.norm_bias)),
             block.attention_scale);
  add_scaled(x, run_conv_ffn(block.ffn, x), block.ffn_scale);
}

void run_module(const VisionStage& stage, Tensor& x) {
  for (const VisionBlock& block : stage.blocks) std::visit([&](const auto& b) { run_block(b, x); }, block);
}

void run_module(const PatchEmbed& embed, Tensor& x) {
  x = run_pointwise(embed.pointwise, run_conv(embed.spatial, x, Activation::Gelu), Activation::Gelu);
}

void run_module(const RepCPE& cpe, Tensor& x) { x = run_conv(cpe.conv, x, Activation::None); }

// Squeeze-excite: scale each channel by sigmoid(excite(relu(squeeze(mean over pixels)))).
void squeeze_excite(const Pointwise& squeeze, const Pointwise& excite, Tensor& x) {
  const int64_t channels = x.dim(-1), pixels = x.numel() / channels;
  Tensor pooled({1, channels});
  std::vector<double> sums(size_t(channels), 0.0);
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t c = 0; c < channels; ++c) sums[size_t(c)] += x.data()[p * channels + c];
  for (int64_t c = 0; c < channels; ++c) pooled.data()[c] = float(sums[size_t(c)] / double(pixels));
  Tensor reduced = run_pointwise(squeeze, pooled, Activation::None);
  for (int64_t i = 0; i < reduced.numel(); ++i) reduced.data()[i] = std::max(reduced.data()[i], 0.0f);
  Tensor gates = run_pointwise(excite, reduced, Activation::None);
  for (int64_t c = 0; c < channels; ++c) gates.data()[c] = 1.0f / (1.0f + std::exp(-gates.data()[c]));
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t c = 0; c < channels; ++c) x.data()[p * channels + c] *= gates.data()[c];
}

Tensor nchw_to_hwc(const Tensor& image) {
  const int64_t channels = image.dim(1), height = image.dim(2), width = image.dim(3);
  Tensor out({height, width, channels});
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t p = 0; p < height * width; ++p) out.data()[p * channels + c] = image.data()[c * height * width + p];
  return out;
}

}  // namespace

std::unique_ptr<VisionTower> VisionTower::load(const Checkpoint& checkpoint) {
  const VisionConfig& config = checkpoint.config().vision;
  check_vision_config(checkpoint, config);
  std::unique_ptr<VisionTower> tower(new VisionTower());
  const int stem_channels = config.embed_dims.front();
  tower->stem_conv_ = load_grouped_conv(checkpoint, "patch_embed.0.reparam_conv", 3, stem_channels, 3, 2, 1);
  tower->stem_depthwise_ =
      load_grouped_conv(checkpoint, "patch_embed.1.reparam_conv", stem_channels, stem_channels, 3, 2, stem_channels);
  tower->stem_pointwise_ = load_conv1x1(checkpoint, "patch_embed.2.reparam_conv", stem_channels, stem_channels);
  int stride = tower->stem_conv_.stride * tower->stem_depthwise_.stride;

  // The official `network` list: per stage an optional RepCPE, the blocks, then a PatchEmbed when the
  // next stage is downsampled or wider.
  int index = 0;
  for (int stage = 0; stage < config.num_stages(); ++stage) {
    const int channels = config.embed_dims[stage];
    if (config.pos_emb_kernel[stage] > 0) {
      RepCPE cpe{load_depthwise(checkpoint, network_name(index) + ".reparam_conv", channels,
                                config.pos_emb_kernel[stage])};
      tower->network_.emplace_back(std::move(cpe));
      ++index;
    }
    VisionStage blocks;
    for (int b = 0; b < config.layers[stage]; ++b)
      blocks.blocks.push_back(load_block(checkpoint, config, stage, network_name(index) + "." + std::to_string(b)));
    tower->network_.emplace_back(std::move(blocks));
    ++index;
    if (config.has_patch_embed_after(stage)) {
      const int next = config.embed_dims[stage + 1];
      const std::string name = network_name(index);
      PatchEmbed embed;
      embed.spatial = load_grouped_conv(checkpoint, name + ".proj.0.lkb_reparam", channels, next,
                                        config.down_patch_size, config.down_stride, channels);
      embed.pointwise = load_conv1x1(checkpoint, name + ".proj.1.reparam_conv", next, next);
      stride *= embed.spatial.stride;
      tower->network_.emplace_back(std::move(embed));
      ++index;
    }
  }

  const int last = config.embed_dims.back();
  const int out = config.out_channels();
  tower->head_conv_ = load_grouped_conv(checkpoint, "conv_exp.reparam_conv", last, out, 3, 1, last);
  const int squeezed = int(out * kSqueezeRatio);
  tower->squeeze_ = load_conv1x1(checkpoint, "conv_exp.se.reduce", out, squeezed);
  tower->excite_ = load_conv1x1(checkpoint, "conv_exp.se.expand", squeezed, out);
  tower->total_stride_ = stride;
  tower->out_channels_ = out;
  return tower;
}

Tensor VisionTower::encode(const Tensor& pixel_values, const Observer& observer) const {
  if (pixel_values.rank() != 4 || pixel_values.dim(0) != 1 || pixel_values.dim(1) != 3)
    throw Error("vision tower: pixel_values must be [1, 3, H, W], got " + shape_string(pixel_values.shape()));
  const int64_t height = pixel_values.dim(2), width = pixel_values.dim(3);
  if (height <= 0 || width <= 0 || height % total_stride_ != 0 || width % total_stride_ != 0)
    throw Error("vision tower: image size " + std::to_string(width) + "x" + std::to_string(height) +
                " is not a positive multiple of the tower's stride " + std::to_string(total_stride_));
  auto observe = [&](const std::string& name, const Tensor& x) {
    if (observer) observer(name, x);
  };

  Tensor x = nchw_to_hwc(pixel_values);
  x = run_conv(stem_conv_, x, Activation::Gelu);
  x = run_conv(stem_depthwise_, x, Activation::Gelu);
  x = run_pointwise(stem_pointwise_, x, Activation::Gelu);
  observe("vision.patch_embed", x);
  for (size_t i = 0; i < network_.size(); ++i) {
    std::visit([&](const auto& module) { run_module(module, x); }, network_[i]);
    observe("vision.network." + std::to_string(i), x);
  }
  x = run_conv(head_conv_, x, Activation::None);
  squeeze_excite(squeeze_, excite_, x);
  gelu_inplace(x.data(), x.numel());
  observe("vision.conv_exp", x);
  x.reshape({x.dim(0) * x.dim(1), x.dim(2)});
  return x;
}

}  // namespace fastvlm
