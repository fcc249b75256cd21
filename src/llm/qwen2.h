#pragma once
// The Qwen2 decoder-only language model (any size: dimensions come from config.json), float32 reference
// path: pre-norm decoder layers of grouped-query attention with rotary positions and a SiLU-gated MLP.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "llm/kv_cache.h"

namespace fastvlm {

// Receives the residual stream after each decoder layer ("llm.hidden.<i>") and after the final norm
// ("llm.final_norm"), as `rows` x `cols` row-major floats for the positions of one forward call. The
// names are those of the golden intermediates.
using HiddenStateObserver = std::function<void(std::string_view name, const float* data, int rows, int cols)>;

class Qwen2 {
 public:
  // Reads the LLM weights (model.embed_tokens, model.layers.N.*, model.norm, lm_head unless tied) with
  // the shapes implied by the checkpoint's config. Throws fastvlm::Error naming a missing or misshapen
  // tensor, or an inconsistent config.
  static std::unique_ptr<Qwen2> load(const Checkpoint& checkpoint);

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
  // y = x·Wᵀ (+ b). All weight access of the model goes through here, so that changing the stored weight
  // format (bf16, quantised) is a change to this struct alone. The weight is shared so that a tied lm_head
  // and the embedding table are one array.
  struct Linear {
    std::shared_ptr<const Tensor> weight;  // [out_features, in_features]
    Tensor bias;                           // [out_features], empty when the layer has none
    int in_features = 0;
    int out_features = 0;

    static Linear load(const Checkpoint& checkpoint, const std::string& prefix, int out_features, int in_features,
                       bool with_bias);
    // y[rows, out_features] = x[rows, in_features]·Wᵀ + b.
    void forward(const float* x, int rows, float* y) const;
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
  void mlp(const Layer& layer, Workspace& ws) const;
  void rms_norm(const float* x, const Tensor& weight, int rows, float* y) const;
  void apply_rotary(float* x, int rows, int heads, const Workspace& ws) const;

  TextConfig config_;
  std::shared_ptr<const Tensor> embed_tokens_;  // [vocab, hidden]
  std::vector<Layer> layers_;
  Tensor final_norm_;                           // [hidden]
  Linear lm_head_;
  std::vector<double> inverse_frequencies_;     // [head_dim / 2] rotary frequencies, theta^(-2j/head_dim)
};

}  // namespace fastvlm
