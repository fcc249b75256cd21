#pragma once
// What the engine needs of a language model: token ids to embeddings, and embeddings at the next
// positions of a KV cache to the logits of the last one. Each architecture implements it (today every
// family is a configuration of the LLaMA-family graph in llm/decoder.h).
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "llm/kv_cache.h"
#include "llm/text_config.h"

namespace fastvlm {

// Receives the residual stream after each decoder layer ("llm.hidden.<i>") and after the final norm
// ("llm.final_norm"), as `rows` x `cols` row-major floats for the positions of one forward call. The
// names are those of the golden intermediates.
using HiddenStateObserver = std::function<void(std::string_view name, const float* data, int rows, int cols)>;

class TextDecoder {
 public:
  virtual ~TextDecoder() = default;

  virtual const TextConfig& config() const = 0;

  // out[n, hidden] = embedding rows of `ids`. Throws when an id is outside [0, vocab_size).
  virtual void embed(std::span<const int32_t> ids, float* out) const = 0;

  // Runs `n` positions given as embeddings [n, hidden], at positions cache.size() .. cache.size()+n-1,
  // appending their keys and values to `cache`. Returns the logits [vocab_size] of the last position
  // only. Throws (before any work, leaving the cache unchanged) when the positions do not fit the cache
  // or the cache was made for other dimensions.
  virtual std::vector<float> forward(const float* embeddings, int n, KVCache& cache,
                                     const HiddenStateObserver& observer = {}) const = 0;

  // Batched decode: the next position of each of B sequences, embeddings [B, hidden], sequence b in
  // caches[b] (B distinct caches). Each linear runs once over the B rows; attention reads each row's own
  // cache. Returns the logits [B, vocab_size]. Throws, before any work, when a position does not fit its cache.
  // With `counts` (one per sequence, each >= 1), sequence b advances by counts[b] positions instead, its
  // embeddings consecutive rows in sequence order, and the logits are those of each sequence's last new
  // position: a decode step that carries a prefill chunk of another sequence reads the weights once for both.
  virtual std::vector<float> forward_batch(const float* embeddings, std::span<KVCache* const> caches,
                                           std::span<const int> counts = {}) const = 0;

  // Bytes of weights one decoded token reads (decode is bound by streaming them from memory).
  virtual int64_t decode_weight_bytes() const = 0;
};

// Multiply-accumulates of prefilling `positions` new positions after `cached` ones, logits for the last
// only (causal attention counted as half the square): 102.0 G for Qwen2-0.5B at 280 positions.
int64_t prefill_macs(const TextConfig& config, int64_t positions, int64_t cached = 0);

}  // namespace fastvlm
