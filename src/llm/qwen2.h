#pragma once
// The Qwen2 decoder-only language model (any size: dimensions come from config.json): pre-norm decoder
// layers of grouped-query attention with rotary positions and a SiLU-gated MLP. Activations are float32;
// the weights are float32 (the accuracy reference), the checkpoint's bfloat16 used in place, or Q8_0/Q4_0
// blocks from a `fastvlm quantize`d checkpoint.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/quant.h"
#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "llm/attention.h"
#include "llm/kv_cache.h"

namespace fastvlm {

// Receives the residual stream after each decoder layer ("llm.hidden.<i>") and after the final norm
// ("llm.final_norm"), as `rows` x `cols` row-major floats for the positions of one forward call. The
// names are those of the golden intermediates.
using HiddenStateObserver = std::function<void(std::string_view name, const float* data, int rows, int cols)>;

// How the weights of a dense (unquantised) checkpoint are held and multiplied.
enum class LlmDtype {
  F32,   // widened to float32 copies, float32 GEMMs: the accuracy reference
  BF16,  // the checkpoint's bf16 bytes used in place (no copy); bf16 x bf16 -> f32 GEMMs in prefill,
         // bf16 GEMV in decode. A checkpoint stored in another float type is converted once.
};

struct LlmOptions {
  LlmDtype dtype = LlmDtype::F32;
};

// Multiply-accumulates of prefilling `positions` new positions after `cached` ones, logits for the last
// only (causal attention counted as half the square): 102.0 G for Qwen2-0.5B at 280 positions.
int64_t prefill_macs(const TextConfig& config, int64_t positions, int64_t cached = 0);

class Qwen2 {
 public:
  // Reads the LLM weights (model.embed_tokens, model.layers.N.*, model.norm, lm_head unless tied) with
  // the shapes implied by the checkpoint's config. A quantised checkpoint (config "quantization") loads
  // its linears as stored whatever options.dtype says; the embedding, norms and biases follow dtype.
  // Throws fastvlm::Error naming a missing or misshapen tensor, or an inconsistent config.
  static std::unique_ptr<Qwen2> load(const Checkpoint& checkpoint, const LlmOptions& options = {});

  const TextConfig& config() const { return config_; }

  // out[n, hidden] = embedding rows of `ids`. Throws when an id is outside [0, vocab_size).
  void embed(std::span<const int32_t> ids, float* out) const;

  // Runs `n` positions given as embeddings [n, hidden], at positions cache.size() .. cache.size()+n-1,
  // appending their keys and values to `cache`. Returns the logits [vocab_size] of the last position
  // only. Throws (before any work, leaving the cache unchanged) when the positions do not fit the cache
  // or the cache was made for other dimensions.
  std::vector<float> forward(const float* embeddings, int n, KVCache& cache,
                             const HiddenStateObserver& observer = {}) const;

 private:
  // y = x·Wᵀ (+ b). All weight access of the model goes through here, the embedding table included (its
  // rows are read with row()). Copies share the weights, so a tied lm_head and the embedding are one array.
  struct Linear {
    enum class Format { F32, BF16, Quantized };
    Format format = Format::F32;
    std::shared_ptr<const Tensor> f32;              // F32: [out_features, in_features]
    const uint16_t* bf16 = nullptr;                 // BF16: [out_features, in_features], usually in the mmap
    std::shared_ptr<const std::vector<uint16_t>> converted_bf16;  // owns `bf16` when the checkpoint was not bf16
    QuantMatrix quantized;                          // Quantized: codes and scales in the mmap
    std::vector<float> bias;                        // [out_features], empty when the layer has none
    int in_features = 0;
    int out_features = 0;

    // A dense weight `name` ([out, in], any float type) held as `dtype` says.
    static Linear load_dense(const Checkpoint& checkpoint, const std::string& name, int out_features,
                             int in_features, LlmDtype dtype);
    // `prefix`.weight (+ `prefix`.bias): quantised when the checkpoint is, else dense as `dtype` says.
    static Linear load(const Checkpoint& checkpoint, const std::string& prefix, int out_features, int in_features,
                       bool with_bias, LlmDtype dtype);
    // y[rows, out_features] = x[rows, in_features]·Wᵀ + b: GEMV per row for decode, a GEMM for prefill.
    void forward(const float* x, int rows, float* y) const;
    // out[in_features] = row `index` of W as floats (embedding lookup).
    void row(int64_t index, float* out) const;
  };

  struct Layer {
    Tensor input_norm;           // [hidden]
    Linear q_proj, k_proj, v_proj, o_proj;
    Tensor post_attention_norm;  // [hidden]
    Linear gate_proj, up_proj, down_proj;
  };
  struct Workspace;

  explicit Qwen2(const TextConfig& config) : config_(config) {}
  void attention(int layer_index, const Layer& layer, Workspace& ws, KVCache& cache) const;
  void attend_with_dot_loops(int layer_index, Workspace& ws, const KVCache& cache) const;
  void mlp(const Layer& layer, Workspace& ws) const;
  void rms_norm(const float* x, const Tensor& weight, int rows, float* y) const;
  void apply_rotary(float* x, int rows, int heads, const Workspace& ws) const;

  TextConfig config_;
  Linear embed_tokens_;                         // [vocab, hidden], read by rows
  std::vector<Layer> layers_;
  Tensor final_norm_;                           // [hidden]
  Linear lm_head_;
  std::vector<double> inverse_frequencies_;     // [head_dim / 2] rotary frequencies, theta^(-2j/head_dim)
  AttentionPrecision attention_precision_ = AttentionPrecision::F32;  // of prefill attention
};

}  // namespace fastvlm
