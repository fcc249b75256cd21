#pragma once
// The LLaMA-family decoder graph (Qwen2, LLaMA, the LLM half of FastVLM; any size: dimensions come from
// the TextConfig its family parsed): pre-norm decoder layers of grouped-query attention with rotary
// positions and a SiLU-gated MLP. Activations are float32; the weights are float32 (the accuracy
// reference), the checkpoint's bfloat16 used in place, or Q8_0/Q4_0 blocks from a `fastvlm quantize`d
// checkpoint (nn/linear.h).
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"
#include "llm/attention.h"
#include "llm/kv_cache.h"
#include "llm/text_decoder.h"
#include "nn/linear.h"

namespace fastvlm {

class Decoder final : public TextDecoder {
 public:
  // Reads the weights (model.embed_tokens, model.layers.N.*, model.norm, lm_head unless tied, with the
  // biases `config` promises) with the shapes `config` implies, for `precision`: F32 holds the dense weights
  // as float32 (the reference), Bf16 and Int8 (which has no decoder path of its own) as bfloat16, with
  // bfloat16 prefill attention where the CPU has it. A quantised checkpoint loads its linears as stored
  // whatever the precision; on a dense one `quantize_linears` Q8_0 or Q4_0 block-quantises the layers'
  // projections and an untied lm_head while loading (the embedding stays dense: it is read by rows).
  // Throws fastvlm::Error naming a missing or misshapen tensor, or an inconsistent config; Auto is the
  // caller's to resolve.
  static std::unique_ptr<Decoder> load(const Checkpoint& checkpoint, const TextConfig& config, Precision precision,
                                       std::optional<WeightType> quantize_linears = std::nullopt);
  // Bytes of weights one decoded token reads: every layer's projections, lm_head, one embedding row.
  int64_t decode_weight_bytes() const override;

  const TextConfig& config() const override { return config_; }
  void embed(std::span<const int32_t> ids, float* out) const override;
  std::vector<float> forward(const float* embeddings, int n, KVCache& cache,
                             const HiddenStateObserver& observer = {}) const override;
  std::vector<float> forward_batch(const float* embeddings, std::span<KVCache* const> caches,
                                   std::span<const int> counts = {}) const override;

 private:
  struct Layer {
    Tensor input_norm;           // [hidden]
    Linear q_proj, k_proj, v_proj, o_proj;
    Tensor post_attention_norm;  // [hidden]
    Linear gate_proj, up_proj, down_proj;
  };
  struct Workspace;

  explicit Decoder(const TextConfig& config) : config_(config) {}
  void check_fits(const KVCache& cache, int n) const;
  void run_layers(const float* embeddings, Workspace& ws, const HiddenStateObserver& observer) const;
  // The logits of the given rows of the workspace, in that order.
  std::vector<float> logits_of_rows(const Workspace& ws, std::span<const int> rows) const;
  void attention(int layer_index, const Layer& layer, Workspace& ws) const;
  void attend_with_dot_loops(int layer_index, Workspace& ws) const;
  void mlp(const Layer& layer, Workspace& ws) const;
  void rms_norm(const float* x, const Tensor& weight, int rows, float* y) const;
  void apply_rotary(float* x, int rows, int heads, const Workspace& ws) const;

  TextConfig config_;
  Linear embed_tokens_;                         // [vocab, hidden], read by rows
  std::vector<Layer> layers_;
  Tensor final_norm_;                           // [hidden]
  Linear lm_head_;                              // a copy of embed_tokens_ when tied (the weights are shared)
  std::vector<double> inverse_frequencies_;     // [head_dim / 2] rotary frequencies
  Precision attention_precision_ = Precision::F32;  // of prefill attention
};

// Whether `name` is one of the graph's linear weights (the layers' projections and lm_head; not the
// embedding, which is read by rows): what `fastvlm quantize` may block-quantise.
bool is_decoder_linear_weight(const std::string& name);

}  // namespace fastvlm
