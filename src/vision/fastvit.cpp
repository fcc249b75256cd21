#include "vision/fastvit.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/dtype.h"
#include "core/error.h"
#include "core/ops.h"
#include "kernels/activations.h"
#include "kernels/capabilities.h"
#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "kernels/int8_epilogue.h"
#include "kernels/norms.h"
#include "kernels/softmax.h"

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

// A layer's float32 weights while norms and scales are folded into them, before Linear::from_f32
// converts them to the storage the precision multiplies with (rounding must come after the folding).
struct FloatLinear {
  Tensor weight;  // [out, in]
  Tensor bias;    // [out], empty when the layer has none
  int64_t out() const { return weight.dim(0); }
};

// A Linear layer, stored [out, in].
FloatLinear load_linear(const Checkpoint& checkpoint, const std::string& name, int in, int out, bool has_bias) {
  FloatLinear layer{load(checkpoint, name + ".weight", {out, in}), Tensor()};
  if (has_bias) layer.bias = load(checkpoint, name + ".bias", {out});
  return layer;
}

// A 1x1 Conv2d with bias, stored [out, in, 1, 1]: the same matrix as a Linear.
FloatLinear load_conv1x1(const Checkpoint& checkpoint, const std::string& name, int in, int out) {
  FloatLinear layer{load(checkpoint, name + ".weight", {out, in, 1, 1}), load(checkpoint, name + ".bias", {out})};
  layer.weight.reshape({out, in});
  return layer;
}

// Multiplies output row o of `layer` (and its bias) by scale[o]: scale ⊙ (W x + b) = (scale ⊙ W) x + scale ⊙ b.
void scale_outputs(FloatLinear& layer, const float* scale, int64_t rows) {
  const int64_t in = layer.weight.dim(1);
  for (int64_t o = 0; o < rows; ++o) {
    for (int64_t i = 0; i < in; ++i) layer.weight.data()[o * in + i] *= scale[o];
    if (!layer.bias.empty()) layer.bias.data()[o] *= scale[o];
  }
}

// Folds a layer scale stored [C, 1, 1] into the layer producing the scaled branch.
void fold_layer_scale(const Checkpoint& checkpoint, const std::string& name, FloatLinear& layer) {
  const Tensor scale = load(checkpoint, name, {layer.out(), 1, 1});
  scale_outputs(layer, scale.data(), layer.out());
}

// The type of the activations and weights that Int8 leaves unquantised: bfloat16 where the CPU computes
// in it, else (AVX2) float32.
DType int8_companion_type() { return kernels::bf16_compute_available() ? DType::BF16 : DType::F32; }

// The storage of a 1x1 layer's weights under `precision`. Int8 quantises the ConvFFN and attention layers
// (`int8_tolerant`: all but ~2% of the 1x1 multiply-accumulates); the stem's and PatchEmbeds' 1x1 convs
// stay in int8_companion_type(): quantised, they alone took the fixture's embeddings from ~1.2% to ~4% off f32.
WeightType weight_storage(Precision precision, bool int8_tolerant) {
  switch (precision) {
    case Precision::F32: return WeightType::F32;
    case Precision::Bf16: return WeightType::BF16;
    default:
      if (int8_tolerant) return WeightType::S8;
      return int8_companion_type() == DType::BF16 ? WeightType::BF16 : WeightType::F32;
  }
}

Linear to_linear(FloatLinear layer, WeightType storage) {
  return Linear::from_f32(std::move(layer.weight), std::move(layer.bias), storage);
}

// `layer_scale` names the block's scale of the ConvFFN branch, folded into contract.
ConvFFN load_conv_ffn(const Checkpoint& checkpoint, const std::string& name, int channels, int hidden,
                      const std::string& layer_scale, Precision precision) {
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
  const WeightType storage = weight_storage(precision, /*int8_tolerant=*/true);
  ffn.expand = to_linear(load_conv1x1(checkpoint, name + ".fc1", channels, hidden), storage);
  FloatLinear contract = load_conv1x1(checkpoint, name + ".fc2", hidden, channels);
  fold_layer_scale(checkpoint, layer_scale, contract);
  ffn.contract = to_linear(std::move(contract), storage);
  return ffn;
}

VisionBlock load_block(const Checkpoint& checkpoint, const VisionConfig& config, int stage, const std::string& name,
                       Precision precision) {
  const int channels = config.embed_dims[stage];
  const int hidden = channels * config.mlp_ratios[stage];
  if (config.token_mixers[stage] == TokenMixer::RepMixer) {
    RepMixerBlock block;
    block.mixer = load_depthwise(checkpoint, name + ".token_mixer.reparam_conv", channels, config.repmixer_kernel_size);
    block.ffn = load_conv_ffn(checkpoint, name + ".convffn", channels, hidden, name + ".layer_scale", precision);
    return block;
  }
  if (channels % config.head_dim != 0)
    throw Error(checkpoint.dir().string() + ": attention stage " + std::to_string(stage) + " has " +
                std::to_string(channels) + " channels, not a multiple of head_dim " + std::to_string(config.head_dim));
  AttentionBlock block;
  block.norm_weight = load(checkpoint, name + ".norm.weight", {channels});
  block.norm_bias = load(checkpoint, name + ".norm.bias", {channels});
  FloatLinear qkv = load_linear(checkpoint, name + ".token_mixer.qkv", channels, 3 * channels, /*has_bias=*/false);
  FloatLinear proj = load_linear(checkpoint, name + ".token_mixer.proj", channels, channels, /*has_bias=*/true);
  block.head_dim = config.head_dim;
  // The reference scales q before the product: (q * scale) @ k^T.
  const std::vector<float> q_scale(size_t(channels), 1.0f / std::sqrt(float(config.head_dim)));
  scale_outputs(qkv, q_scale.data(), channels);
  fold_layer_scale(checkpoint, name + ".layer_scale_1", proj);
  const WeightType storage = weight_storage(precision, /*int8_tolerant=*/true);
  block.qkv = to_linear(std::move(qkv), storage);
  block.proj = to_linear(std::move(proj), storage);
  block.ffn = load_conv_ffn(checkpoint, name + ".convffn", channels, hidden, name + ".layer_scale_2", precision);
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
// Activation storage

Activations allocate(ScratchBuffer& buffer, DType type, int64_t count) {
  return {type, type == DType::BF16 ? static_cast<void*>(buffer.as<uint16_t>(count))
                                         : static_cast<void*>(buffer.as<float>(count))};
}

// Writes `n` floats (a row computed in float32) to `dst` in its type.
void store_row(const float* src, int64_t n, const Activations& dst, int64_t offset) {
  if (dst.type == DType::BF16)
    f32_to_bf16_simd(src, static_cast<uint16_t*>(dst.at(offset)), n);
  else if (static_cast<float*>(dst.at(offset)) != src)
    std::copy(src, src + n, static_cast<float*>(dst.at(offset)));
}

}  // namespace

// The buffers of one encode, named by their role (each is reused by every layer of that role).
struct VisionScratch {
  ScratchBuffer mixed;         // spatial-conv or LayerNorm output feeding a GEMM, [pixels, C] (or 2C after a
                               // PatchEmbed conv); under Int8 the ConvFFN input as int8 codes
  ScratchBuffer pixel_scales;  // Int8 compute: the scale of each pixel of `mixed`
  ScratchBuffer edge_rows;     // a RepMixer's output rows just outside a thread's rows, per thread
  ScratchBuffer row_table;     // the address of each row of the RepMixer's output, per thread
  ScratchBuffer hidden;        // ConvFFN hidden activation, one [tile pixels, mlp_ratio * C] slice per thread;
                               // under Int8 the scale of each hidden pixel of `codes`
  ScratchBuffer codes;         // Int8 compute: one thread's ConvFFN hidden tile as int8 codes, per thread
  ScratchBuffer qkv;           // attention q|k|v, [tokens, 3C]
  ScratchBuffer heads;         // the same per head, [3 * heads, tokens, head_dim]
  ScratchBuffer head_output;   // one head's attention output for one query block, per thread
  ScratchBuffer scores;        // attention logits of one head and query block, float32, per thread
  ScratchBuffer probs;         // the same as bfloat16 attention weights (Bf16 compute only), per thread
  ScratchBuffer attended;      // attention output before the projection, [tokens, C]
  Tensor stem_band;  // the rows of the stem's first conv output that one band of its depthwise conv reads
  Tensor x;          // the residual stream, [H, W, C] float32
  Tensor spare;      // float32 map that out-of-place layers write before it is swapped with x; until the
                     // first of them, the input as an [H, W, 3] map
};

namespace {

// Everything a forward step needs besides the weights and buffers.
struct Pass {
  DType activation_type;  // of the GEMM operands that are not int8
  bool int8;                   // Int8 compute: the ConvFFN and attention layers on int8 codes
  // Of the inputs of the attention's Linears: float32 under Int8, which quantises them per token.
  DType attention_linear_input() const { return int8 ? DType::F32 : activation_type; }
};

// ---------------------------------------------------------------------------------------------------
// Layers on [H, W, C] maps

// The conv kernel's view of a layer.
ConvParams conv_params(const GroupedConv& conv) {
  return {.in_channels = conv.in_channels, .out_channels = conv.out_channels, .kernel = conv.kernel,
          .stride = conv.stride, .groups = conv.groups, .weight = conv.weight.data(), .bias = conv.bias.data()};
}

int64_t conv_output_size(const GroupedConv& conv, int64_t in) { return conv_output_size(conv_params(conv), in); }

// Computes one output row in float32 with `compute(row)`, at `target(oy)` (or in thread-local staging when
// that is null), applies `activation` and hands it to `store(oy, row)` while it is still in cache.
template <class Target, class Store, class Compute>
void produce_row(int64_t oy, int64_t row_size, Activation activation, Target& target, Store& store,
                 Compute compute) {
  thread_local std::vector<float> staging;
  float* row = target(oy);
  if (!row) {
    staging.resize(size_t(row_size));
    row = staging.data();
  }
  compute(row);
  if (activation == Activation::Gelu) gelu_simd(row, row_size);
  store(oy, row);
}

// Runs `conv` over the map `input` ([in_h, in_w, in_channels], float32) one output row at a time,
// threaded over rows, each row through produce_row. Output rows [row_begin, row_end) (all of them when
// row_end is negative).
template <class Target, class Store>
void conv_by_rows(const GroupedConv& conv, const float* input, int64_t in_h, int64_t in_w, Activation activation,
                  Target target, Store store, int64_t row_begin = 0, int64_t row_end = -1) {
  const int64_t row_size = conv_output_size(conv, in_w) * conv.out_channels;
  if (row_end < 0) row_end = conv_output_size(conv, in_h);
  const ConvParams params = conv_params(conv);
#pragma omp parallel for schedule(static)
  for (int64_t oy = row_begin; oy < row_end; ++oy)
    produce_row(oy, row_size, activation, target, store,
                [&](float* row) { conv_rows(params, input, in_h, in_w, row, oy, oy + 1); });
}

// `conv` over `input` into `output` ([out_h, out_w, out_channels] in its type).
void run_conv(const GroupedConv& conv, const float* input, int64_t in_h, int64_t in_w, const Activations& output,
              Activation activation) {
  const int64_t row_size = conv_output_size(conv, in_w) * conv.out_channels;
  const auto in_place = [&](int64_t oy) {
    return output.type == DType::F32 ? static_cast<float*>(output.at(oy * row_size)) : nullptr;
  };
  const auto store = [&](int64_t oy, const float* row) { store_row(row, row_size, output, oy * row_size); };
  conv_by_rows(conv, input, in_h, in_w, activation, in_place, store);
}

// `storage` resized to hold `conv`'s float32 output on an [in_h, in_w] input.
Tensor& conv_output_map(const GroupedConv& conv, int64_t in_h, int64_t in_w, Tensor& storage) {
  storage.resize({conv_output_size(conv, in_h), conv_output_size(conv, in_w), conv.out_channels});
  return storage;
}

// x = conv(x) for convolutions that keep the map's shape (RepMixer, RepCPE), through the spare map.
void run_conv_in_place(const GroupedConv& conv, Tensor& x, Tensor& spare) {
  Tensor& output = conv_output_map(conv, x.dim(0), x.dim(1), spare);
  run_conv(conv, x.data(), x.dim(0), x.dim(1), {DType::F32, output.data()}, Activation::None);
  std::swap(x, spare);
}

// A ConvFFN's depthwise conv output, the input of its GEMMs, written row by row as the conv produces
// them: `mixed` in the activation type, or under Int8 codes with a scale per pixel.
struct ConvFFNInput {
  Activations mixed;        // when codes is null
  int8_t* codes = nullptr;  // Int8 compute: [pixels, channels]
  float* scales = nullptr;  // Int8 compute: [pixels]
  int64_t width = 0, channels = 0;

  ConvFFNInput(VisionScratch& scratch, const Pass& pass, int64_t height, int64_t width, int64_t channels)
      : width(width), channels(channels) {
    const int64_t pixels = height * width;
    if (pass.int8) {
      codes = scratch.mixed.as<int8_t>(pixels * channels);
      scales = scratch.pixel_scales.as<float>(pixels);
    } else {
      mixed = allocate(scratch.mixed, pass.activation_type, pixels * channels);
    }
  }
  // Where row `oy` is computed: in place when the GEMMs read float32, else staged (null).
  float* target(int64_t oy) const {
    return codes || mixed.type != DType::F32 ? nullptr : static_cast<float*>(mixed.at(oy * width * channels));
  }
  void store(int64_t oy, const float* row) const {
    if (codes)
      quantize_rows_s8(row, width, channels, channels, codes + oy * width * channels, scales + oy * width);
    else
      store_row(row, width * channels, mixed, oy * width * channels);
  }
};

// x = mixer(x) (a RepMixer) and the following ConvFFN's depthwise conv on the new x into `input`, in one
// pass over the map: each thread takes a contiguous range of rows, writes the mixer's output rows into
// the spare map (then swapped with x) and runs the depthwise conv on each row as soon as the mixer rows
// it reads are there, while they are still in L2; the maps of the first stages are several times L2,
// and the two convs as separate passes read the mixer's output back from memory. The mixer rows within
// the depthwise conv's reach of a range's ends that belong to the neighbouring range are computed again
// into thread-local rows, so no thread waits for another.
void mixer_then_depthwise(const GroupedConv& mixer, const GroupedConv& depthwise, Tensor& x, VisionScratch& scratch,
                          const ConvFFNInput& input) {
  const int64_t height = x.dim(0), width = x.dim(1), row_size = width * x.dim(2);
  const int64_t halo = depthwise.kernel / 2;
  Tensor& mixed_map = scratch.spare;
  mixed_map.resize(x.shape());
  const int workers = int(std::min<int64_t>(omp_get_max_threads(), height));
  float* const edges = scratch.edge_rows.as<float>(workers * 2 * halo * row_size);
  const float** const row_tables = scratch.row_table.as<const float*>(workers * height);
  const ConvParams mixer_params = conv_params(mixer), depthwise_params = conv_params(depthwise);
  const auto target = [&](int64_t oy) { return input.target(oy); };
  const auto store = [&](int64_t oy, const float* row) { input.store(oy, row); };
#pragma omp parallel num_threads(workers)
  {
    // The team OpenMP gives may be smaller than asked for: the rows are split over the actual one.
    const int worker = omp_get_thread_num(), team = omp_get_num_threads();
    const int64_t first = height * worker / team, last = height * (worker + 1) / team;
    const float** rows = row_tables + worker * height;
    float* edge = edges + worker * 2 * halo * row_size;
    const auto mix = [&](int64_t y, float* row) {
      conv_rows(mixer_params, x.data(), height, width, row, y, y + 1);
      rows[y] = row;
    };
    for (int64_t y = std::max<int64_t>(0, first - halo); y < first; ++y) mix(y, edge + (first - y - 1) * row_size);
    for (int64_t y = last; y < std::min(height, last + halo); ++y) mix(y, edge + (halo + y - last) * row_size);
    int64_t next = first;  // the first of the range's mixer rows not yet computed
    for (int64_t oy = first; oy < last; ++oy) {
      for (; next < std::min(last, oy + halo + 1); ++next) mix(next, mixed_map.data() + next * row_size);
      produce_row(oy, row_size, Activation::None, target, store,
                  [&](float* row) { conv_rows(depthwise_params, rows, height, width, row, oy, oy + 1); });
    }
  }
  std::swap(x, mixed_map);
}

// The ConvFFN's GEMMs under Int8 compute: each thread takes tiles of pixels through expand into int32,
// dequantise + bias + GELU and requantise per pixel (one pass), contract into int32, and the dequantised
// residual add to x. The tiles, like the attention's query blocks and Linear's tiles, go to whichever
// thread is free (schedule(dynamic)): on a shared 2-core VM, where one thread is now and then slowed, the
// threads of a 1024² encode waited 3.4% of its samples in the OpenMP runtime instead of 5.1% with equal
// static halves (perf, medians of 7 alternations; the encode's wall time level within the VM's noise).
void conv_ffn_gemms_int8(const ConvFFN& ffn, const ConvFFNInput& input, Tensor& x, VisionScratch& scratch) {
  const int64_t pixels = x.dim(0) * x.dim(1), channels = ffn.expand.in_features(),
                hidden_width = ffn.expand.out_features();
  // The tile's int32 products of expand stay in L2 until they are requantised.
  const int64_t tile_pixels = l2_tile_rows(hidden_width * int64_t(sizeof(int32_t)), DType::I8);
  const int64_t tiles = (pixels + tile_pixels - 1) / tile_pixels;
  const int64_t tile_hidden = tile_pixels * hidden_width;
  const int threads = omp_get_max_threads();
  int8_t* hidden_codes = scratch.codes.as<int8_t>(threads * tile_hidden);
  float* hidden_scales = scratch.hidden.as<float>(threads * tile_pixels);
#pragma omp parallel
  {
    const int thread = omp_get_thread_num();
    int8_t* my_codes = hidden_codes + thread * tile_hidden;
    float* my_scales = hidden_scales + thread * tile_pixels;
#pragma omp for schedule(dynamic)
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t first = tile * tile_pixels, count = std::min(tile_pixels, pixels - first);
      ffn.expand.forward_s8_gelu_requantize(input.codes + first * channels, input.scales + first, count, my_codes,
                                            my_scales);
      ffn.contract.forward_s8(my_codes, my_scales, count, {DType::F32, x.data() + first * channels},
                              Epilogue::AddToOutput);
    }
  }
}

// The ConvFFN's GEMMs on float32 or bfloat16 input: each thread takes tiles of pixels through expand ->
// GELU -> contract -> residual add with single-threaded GEMMs. A map with fewer tiles than threads (the
// last stage of a 512² image: 64 pixels) is cut into one smaller tile per thread rather than run as one tile
// whose GEMMs split the weights' columns between threads: each thread then streams all of the weights, but
// the threads read them in step, and the hidden activation stays with the thread that made it. On two
// threads that stage ran in 25 ms instead of 38-41 (f32, AMD Zen 5, against oneDNN's threading of the 64-row
// products; bench/vision_ab.sh, 5 rounds), a gain inside the noise of that VM's whole 512² encode; on Zen 3
// the tower at 512² ran 4% faster.
void conv_ffn_gemms(const ConvFFN& ffn, const ConvFFNInput& input, Tensor& x, VisionScratch& scratch,
                    const Pass& pass) {
  const int64_t pixels = x.dim(0) * x.dim(1);
  const int64_t channels = ffn.expand.in_features(), hidden_width = ffn.expand.out_features();
  const Activations& mixed = input.mixed;
  // The tile's hidden activation stays in L2 between the two GEMMs.
  int64_t tile_pixels = l2_tile_rows(hidden_width * int64_t(dtype_size(pass.activation_type)), pass.activation_type);
  const int threads = omp_get_max_threads();
  if ((pixels + tile_pixels - 1) / tile_pixels < threads) tile_pixels = (pixels + threads - 1) / threads;
  const int64_t tiles = (pixels + tile_pixels - 1) / tile_pixels;
  const int64_t tile_hidden = tile_pixels * hidden_width;
  const Activations hidden = allocate(scratch.hidden, pass.activation_type, threads * tile_hidden);
#pragma omp parallel
  {
    const Activations my_hidden{hidden.type, hidden.at(omp_get_thread_num() * tile_hidden)};
#pragma omp for schedule(dynamic)
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t first = tile * tile_pixels, count = std::min(tile_pixels, pixels - first);
      ffn.expand.forward({mixed.type, mixed.at(first * channels)}, count, my_hidden, Epilogue::Gelu);
      ffn.contract.forward(my_hidden, count, {DType::F32, x.data() + first * channels}, Epilogue::AddToOutput);
    }
  }
}

// x += ConvFFN(x) (layer scale folded into contract), where `mixer`, when given, first replaces x by
// mixer(x) (a RepMixer block's first half). The depthwise conv runs over the whole map first (its halo
// reads rows that the residual add would change), fused with the mixer when there is one; then the GEMMs.
void run_conv_ffn(const ConvFFN& ffn, const GroupedConv* mixer, Tensor& x, VisionScratch& scratch,
                  const Pass& pass) {
  const ConvFFNInput input(scratch, pass, x.dim(0), x.dim(1), x.dim(2));
  if (mixer) {
    mixer_then_depthwise(*mixer, ffn.spatial, x, scratch, input);
  } else {
    const auto target = [&](int64_t oy) { return input.target(oy); };
    const auto store = [&](int64_t oy, const float* row) { input.store(oy, row); };
    conv_by_rows(ffn.spatial, x.data(), x.dim(0), x.dim(1), Activation::None, target, store);
  }
  if (pass.int8)
    conv_ffn_gemms_int8(ffn, input, x, scratch);
  else
    conv_ffn_gemms(ffn, input, x, scratch, pass);
}

// LayerNormChannel: normalises each pixel over its channels (biased variance), into `output`.
void layer_norm_channels(const Tensor& x, const Tensor& weight, const Tensor& bias, const Activations& output) {
  const int64_t channels = weight.numel(), pixels = x.numel() / channels;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pixels; ++p) {
    thread_local std::vector<float> normalised;
    normalised.resize(size_t(channels));
    layer_norm_row(x.data() + p * channels, weight.data(), bias.data(), channels, kLayerNormEps, normalised.data());
    store_row(normalised.data(), channels, output, p * channels);
  }
}

// Queries per attention work item: one head's scores for them (float32, plus their bfloat16
// probabilities) stay in L2 while they are normalised and multiplied with v.
constexpr int64_t kAttentionQueryBlock = 256;

// Copies q|k|v ([tokens, 3 * channels], each third split into heads of head_dim) to one dense
// [tokens, head_dim] matrix per head and role, [3 * heads, tokens, head_dim]: oneDNN 2.6 runs its brgemm
// (AMX) kernels only on dense operands, and strided heads fall back to gemm:jit at about half the speed.
// One destination matrix at a time, so that the writes stream through memory in order (the reads stride
// by a constant that the prefetcher follows) instead of scattering into 3 * heads write streams at once.
void split_heads(const Activations& qkv, int64_t tokens, int64_t channels, int64_t head_dim, const Activations& heads) {
  const int64_t matrices = 3 * channels / head_dim, element = int64_t(dtype_size(qkv.type));
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < matrices; ++m)
    for (int64_t t = 0; t < tokens; ++t)
      std::memcpy(heads.at((m * tokens + t) * head_dim), qkv.at(t * 3 * channels + m * head_dim),
                  size_t(head_dim * element));
}

// x += proj(MHSA(LayerNormChannel(x))) over all H*W tokens (layer scale folded into proj, the q scale
// into qkv). Each thread takes (head, block of queries) items with single-threaded products.
void run_attention(const AttentionBlock& block, Tensor& x, VisionScratch& scratch, const Pass& pass) {
  const DType type = pass.activation_type;
  const int64_t channels = x.dim(-1), tokens = x.numel() / channels;
  const int64_t head_dim = block.head_dim, heads = channels / head_dim, row = 3 * channels;
  const int64_t query_block = std::min(tokens, kAttentionQueryBlock);
  const int64_t query_blocks = (tokens + query_block - 1) / query_block;
  const int threads = omp_get_max_threads();
  const Activations normed = allocate(scratch.mixed, pass.attention_linear_input(), tokens * channels);
  const Activations qkv = allocate(scratch.qkv, type, tokens * row);
  const Activations per_head = allocate(scratch.heads, type, tokens * row);
  const Activations attended = allocate(scratch.attended, pass.attention_linear_input(), tokens * channels);
  const int64_t block_scores = query_block * tokens, block_output = query_block * head_dim;
  float* scores = scratch.scores.as<float>(threads * block_scores);
  // Bf16 probabilities go to their own buffer; float32 ones replace the scores.
  const Activations probs = type == DType::BF16 ? allocate(scratch.probs, type, threads * block_scores)
                                                     : Activations{type, scores};
  // A head's output is written densely (for the brgemm kernels, as above), then into its columns of
  // `attended`.
  float* head_output = scratch.head_output.as<float>(threads * block_output);

  layer_norm_channels(x, block.norm_weight, block.norm_bias, normed);
  block.qkv.forward(normed, tokens, qkv, Epilogue::None);
  split_heads(qkv, tokens, channels, head_dim, per_head);
  // The dense [tokens, head_dim] matrix of head h's q (role 0), k (1) or v (2).
  const auto head_matrix = [&](int64_t role, int64_t h) { return per_head.at((role * heads + h) * tokens * head_dim); };
#pragma omp parallel
  {
    float* my_scores = scores + omp_get_thread_num() * block_scores;
    float* my_output = head_output + omp_get_thread_num() * block_output;
    const Activations my_probs{type, probs.at(omp_get_thread_num() * block_scores)};
    float my_sums[kAttentionQueryBlock];  // each query's softmax sum, for the bfloat16 weights
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < heads * query_blocks; ++item) {
      const int64_t h = item / query_blocks, first = item % query_blocks * query_block;
      const int64_t count = std::min(query_block, tokens - first);
      matmul({.M = count, .N = tokens, .K = head_dim, .ab_type = type,
              .a = per_head.at((h * tokens + first) * head_dim), .lda = head_dim, .b = head_matrix(1, h), .ldb = head_dim, .b_transposed = true,
              .c_type = DType::F32, .c = my_scores, .ldc = tokens});
      // Bfloat16 weights stay unnormalised: the head's output rows are divided by their sums instead,
      // head_dim values per query rather than `tokens`.
      if (type == DType::BF16)
        softmax_numerators_bf16(my_scores, count, tokens, static_cast<uint16_t*>(my_probs.data), my_sums);
      else
        softmax_rows(my_scores, count, tokens);
      matmul({.M = count, .N = head_dim, .K = tokens, .ab_type = type, .a = my_probs.data, .lda = tokens,
              .b = head_matrix(2, h), .ldb = head_dim, .b_transposed = false, .c_type = DType::F32,
              .c = my_output, .ldc = head_dim});
      for (int64_t q = 0; q < count; ++q) {
        float* output_row = my_output + q * head_dim;
        const int64_t offset = (first + q) * channels + h * head_dim;
        const float inverse = type == DType::BF16 ? 1.0f / my_sums[q] : 1.0f;
        if (attended.type == DType::F32) {  // scaled straight into place, with no copy after
          float* target = static_cast<float*>(attended.at(offset));
          for (int64_t c = 0; c < head_dim; ++c) target[c] = output_row[c] * inverse;
        } else {
          for (int64_t c = 0; c < head_dim; ++c) output_row[c] *= inverse;
          store_row(output_row, head_dim, attended, offset);
        }
      }
    }
  }
  block.proj.forward(attended, tokens, {DType::F32, x.data()}, Epilogue::AddToOutput);
}

void run_block(const RepMixerBlock& block, Tensor& x, VisionScratch& scratch, const Pass& pass) {
  run_conv_ffn(block.ffn, &block.mixer, x, scratch, pass);
}

void run_block(const AttentionBlock& block, Tensor& x, VisionScratch& scratch, const Pass& pass) {
  run_attention(block, x, scratch, pass);
  run_conv_ffn(block.ffn, nullptr, x, scratch, pass);
}

void run_module(const VisionStage& stage, Tensor& x, VisionScratch& scratch, const Pass& pass) {
  for (const VisionBlock& block : stage.blocks)
    std::visit([&](const auto& b) { run_block(b, x, scratch, pass); }, block);
}

// A 1x1 conv (GELU) on the [height, width] map `mixed` into `output`.
void run_pointwise(const Linear& pointwise, const Activations& mixed, int64_t height, int64_t width, Tensor& output) {
  output.resize({height, width, pointwise.out_features()});
  pointwise.forward(mixed, height * width, {DType::F32, output.data()}, Epilogue::Gelu);
}

// A spatial conv (GELU) on the [in_h, in_w] map `input` into the GEMM input buffer, then a 1x1 conv
// (GELU) into `output`.
void conv_then_pointwise(const GroupedConv& conv, const Linear& pointwise, const float* input, int64_t in_h,
                         int64_t in_w, Tensor& output, VisionScratch& scratch, const Pass& pass) {
  const int64_t out_h = conv_output_size(conv, in_h), out_w = conv_output_size(conv, in_w);
  const Activations mixed = allocate(scratch.mixed, pass.activation_type, out_h * out_w * conv.out_channels);
  run_conv(conv, input, in_h, in_w, mixed, Activation::Gelu);
  run_pointwise(pointwise, mixed, out_h, out_w, output);
}

// Output rows of the stem's depthwise conv per band (below): 16 at 1024² hold 34 rows of the first conv's
// map (6.4 MiB), and recompute the 2 rows each band shares with the one before (6% of the first conv).
constexpr int64_t kStemBandRows = 16;

// The stem's first conv (GELU), then `second` (GELU) on its output into `output`, band by band of
// `second`'s output rows: only the rows of the first conv's map that a band reads are held in `band`, not
// the whole [H/2, W/2, C] float32 map (96 MiB at 1024², the largest of the encode). A band is a map of
// its own to `second`, starting a whole number of strides above its first row's window, so that its
// inner rows see no padding, and ending with the map or its last row's window.
void stem_by_bands(const GroupedConv& first, const GroupedConv& second, const Tensor& image, Tensor& band,
                   const Activations& output) {
  const int64_t mid_h = conv_output_size(first, image.dim(0)), mid_w = conv_output_size(first, image.dim(1));
  const int64_t out_h = conv_output_size(second, mid_h);
  const int64_t mid_row = mid_w * first.out_channels, out_row = conv_output_size(second, mid_w) * second.out_channels;
  const int64_t stride = second.stride, pad = second.kernel / 2;
  const int64_t lead = (pad + stride - 1) / stride;  // rows of a band's output before its first real one
  for (int64_t first_row = 0; first_row < out_h; first_row += kStemBandRows) {
    const int64_t end_row = std::min(out_h, first_row + kStemBandRows), skip = std::min(first_row, lead);
    const int64_t top = (first_row - skip) * stride;
    const int64_t bottom = std::min(mid_h, (end_row - 1) * stride - pad + second.kernel);
    band.resize({bottom - top, mid_w, first.out_channels});
    const auto band_row = [&](int64_t y) { return band.data() + (y - top) * mid_row; };
    conv_by_rows(first, image.data(), image.dim(0), image.dim(1), Activation::Gelu, band_row,
                 [](int64_t, const float*) {}, top, bottom);
    const int64_t shift = first_row - skip;  // from a band's output row to the map's
    const auto in_place = [&](int64_t oy) {
      return output.type == DType::F32 ? static_cast<float*>(output.at((oy + shift) * out_row)) : nullptr;
    };
    const auto store = [&](int64_t oy, const float* row) { store_row(row, out_row, output, (oy + shift) * out_row); };
    conv_by_rows(second, band.data(), bottom - top, mid_w, Activation::Gelu, in_place, store, skip,
                 skip + end_row - first_row);
  }
}

void run_module(const PatchEmbed& embed, Tensor& x, VisionScratch& scratch, const Pass& pass) {
  conv_then_pointwise(embed.spatial, embed.pointwise, x.data(), x.dim(0), x.dim(1), scratch.spare, scratch, pass);
  std::swap(x, scratch.spare);
}

void run_module(const RepCPE& cpe, Tensor& x, VisionScratch& scratch, const Pass&) {
  run_conv_in_place(cpe.conv, x, scratch.spare);
}

// Squeeze-excite: scale each channel by sigmoid(excite(relu(squeeze(mean over pixels)))). Tiny (one
// row), so always float32.
void squeeze_excite(const Linear& squeeze, const Linear& excite, Tensor& x) {
  const int64_t channels = x.dim(-1), pixels = x.numel() / channels;
  std::vector<double> sums(size_t(channels), 0.0);
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t c = 0; c < channels; ++c) sums[size_t(c)] += x.data()[p * channels + c];
  std::vector<float> pooled(static_cast<size_t>(channels)), reduced(static_cast<size_t>(squeeze.out_features())),
      gates(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) pooled[size_t(c)] = float(sums[size_t(c)] / double(pixels));
  squeeze.forward(pooled.data(), 1, reduced.data());
  for (float& value : reduced) value = std::max(value, 0.0f);
  excite.forward(reduced.data(), 1, gates.data());
  for (float& gate : gates) gate = 1.0f / (1.0f + std::exp(-gate));
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pixels; ++p) {
    float* pixel = x.data() + p * channels;
    for (int64_t c = 0; c < channels; ++c) pixel[c] *= gates[size_t(c)];
    gelu_simd(pixel, channels);
  }
}

// Threaded over image rows: at 1024² this copy is ~12 MB, the one pass of the stem that would otherwise run on
// one thread (it showed as the stem's 1.7x 2-thread speed-up, bench/vision_threads.sh).
void nchw_to_hwc(const Tensor& image, Tensor& out) {
  const int64_t channels = image.dim(1), height = image.dim(2), width = image.dim(3);
  out.resize({height, width, channels});
#pragma omp parallel for schedule(static)
  for (int64_t y = 0; y < height; ++y)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t p = y * width; p < (y + 1) * width; ++p)
        out.data()[p * channels + c] = image.data()[c * height * width + p];
}

}  // namespace

Precision default_vision_precision() {
  return kernels::bf16_compute_available() ? Precision::Bf16 : Precision::F32;
}

VisionTower::~VisionTower() = default;

std::unique_ptr<VisionTower> VisionTower::load(const Checkpoint& checkpoint, const VisionConfig& config,
                                              Precision precision) {
  if (precision == Precision::Auto) throw Error("internal: VisionTower::load needs a resolved precision, not Auto");
  if (precision == Precision::Bf16 && !kernels::bf16_compute_available())
    throw Error("vision tower: bf16 compute needs AVX512-BF16, which this CPU (or FASTVLM_ISA=" +
                kernels::kernel_level_name() + ") lacks; use f32");
  if (precision == Precision::Int8 && !kernels::vision_int8_available())
    throw Error("vision tower: int8 compute needs AVX2, which this CPU (or FASTVLM_ISA=" +
                kernels::kernel_level_name() + ") lacks; use f32");
  check_vision_config(checkpoint, config);
  std::unique_ptr<VisionTower> tower(new VisionTower());
  tower->precision_ = precision;
  // The stem's and PatchEmbeds' 1x1 convs (see weight_storage).
  const WeightType embed_storage = weight_storage(precision, /*int8_tolerant=*/false);
  const int stem_channels = config.embed_dims.front();
  tower->stem_conv_ = load_grouped_conv(checkpoint, "patch_embed.0.reparam_conv", 3, stem_channels, 3, 2, 1);
  tower->stem_depthwise_ =
      load_grouped_conv(checkpoint, "patch_embed.1.reparam_conv", stem_channels, stem_channels, 3, 2, stem_channels);
  tower->stem_pointwise_ =
      to_linear(load_conv1x1(checkpoint, "patch_embed.2.reparam_conv", stem_channels, stem_channels), embed_storage);
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
      blocks.blocks.push_back(load_block(checkpoint, config, stage, network_name(index) + "." + std::to_string(b),
                                          precision));
    tower->network_.emplace_back(std::move(blocks));
    ++index;
    if (config.has_patch_embed_after(stage)) {
      const int next = config.embed_dims[stage + 1];
      const std::string name = network_name(index);
      PatchEmbed embed;
      embed.spatial = load_grouped_conv(checkpoint, name + ".proj.0.lkb_reparam", channels, next,
                                        config.down_patch_size, config.down_stride, channels);
      embed.pointwise = to_linear(load_conv1x1(checkpoint, name + ".proj.1.reparam_conv", next, next), embed_storage);
      stride *= embed.spatial.stride;
      tower->network_.emplace_back(std::move(embed));
      ++index;
    }
  }

  const int last = config.embed_dims.back();
  const int out = config.out_channels();
  tower->head_conv_ = load_grouped_conv(checkpoint, "conv_exp.reparam_conv", last, out, 3, 1, last);
  const int squeezed = int(out * kSqueezeRatio);
  // The squeeze-excite layers multiply one row each: float32 at every precision.
  tower->squeeze_ = to_linear(load_conv1x1(checkpoint, "conv_exp.se.reduce", out, squeezed), WeightType::F32);
  tower->excite_ = to_linear(load_conv1x1(checkpoint, "conv_exp.se.expand", squeezed, out), WeightType::F32);
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

  const std::lock_guard<std::mutex> lock(scratch_mutex_);
  if (!scratch_) scratch_ = std::make_unique<VisionScratch>();
  VisionScratch& scratch = *scratch_;
  const DType activation_type = precision_ == Precision::F32    ? DType::F32
                                : precision_ == Precision::Bf16 ? DType::BF16
                                                                : int8_companion_type();
  const Pass pass{activation_type, precision_ == Precision::Int8};

  Tensor& image = scratch.spare;
  nchw_to_hwc(pixel_values, image);
  const int64_t stem_h = conv_output_size(stem_depthwise_, conv_output_size(stem_conv_, height)),
                stem_w = conv_output_size(stem_depthwise_, conv_output_size(stem_conv_, width));
  const Activations mixed = allocate(scratch.mixed, pass.activation_type, stem_h * stem_w * stem_depthwise_.out_channels);
  stem_by_bands(stem_conv_, stem_depthwise_, image, scratch.stem_band, mixed);
  Tensor& x = scratch.x;
  run_pointwise(stem_pointwise_, mixed, stem_h, stem_w, x);
  observe("vision.patch_embed", x);
  for (size_t i = 0; i < network_.size(); ++i) {
    std::visit([&](const auto& module) { run_module(module, x, scratch, pass); }, network_[i]);
    observe("vision.network." + std::to_string(i), x);
  }
  Tensor head({x.dim(0), x.dim(1), head_conv_.out_channels});
  run_conv(head_conv_, x.data(), x.dim(0), x.dim(1), {DType::F32, head.data()}, Activation::None);
  squeeze_excite(squeeze_, excite_, head);
  observe("vision.conv_exp", head);
  head.reshape({head.dim(0) * head.dim(1), head.dim(2)});
  return head;
}

int64_t vision_macs(const VisionConfig& config, int image_size) {
  const int64_t c0 = config.embed_dims[0], size = image_size;
  int64_t macs = (size / 2) * (size / 2) * c0 * 3 * 9  // stem: 3x3 stride-2 conv
                 + (size / 4) * (size / 4) * c0 * 9    // 3x3 stride-2 depthwise
                 + (size / 4) * (size / 4) * c0 * c0;  // 1x1
  int64_t side = size / 4;
  for (int stage = 0; stage < config.num_stages(); ++stage) {
    const int64_t c = config.embed_dims[stage], pixels = side * side, hidden = c * config.mlp_ratios[stage];
    const int64_t pos_kernel = config.pos_emb_kernel[stage];
    macs += pixels * c * pos_kernel * pos_kernel;  // RepCPE
    for (int block = 0; block < config.layers[stage]; ++block) {
      if (config.token_mixers[stage] == TokenMixer::RepMixer)
        macs += pixels * c * config.repmixer_kernel_size * config.repmixer_kernel_size;
      else  // qkv, q·kᵀ, ·v, proj
        macs += pixels * c * 3 * c + 2 * pixels * pixels * c + pixels * c * c;
      macs += pixels * c * 49 + 2 * pixels * c * hidden;  // ConvFFN: depthwise 7x7, fc1, fc2
    }
    if (config.has_patch_embed_after(stage)) {
      side /= config.down_stride;
      const int64_t k = config.down_patch_size;
      macs += side * side * 2 * c * k * k + side * side * 4 * c * c;  // grouped k x k (1 input each), 1x1
    }
  }
  const int64_t out = config.out_channels();
  macs += side * side * out * 9 + 2 * out * (out / 16);  // conv_exp grouped 3x3 (one input each), SE
  return macs;
}

}  // namespace fastvlm
