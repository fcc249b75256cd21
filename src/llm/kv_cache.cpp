#include "llm/kv_cache.h"

#include <string>

#include "core/error.h"

namespace fastvlm {

KVCache::KVCache(const TextConfig& config, int capacity)
    : num_layers_(config.num_hidden_layers),
      num_kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim),
      capacity_(capacity) {
  if (capacity < 1 || capacity > config.max_position_embeddings) {
    throw Error("KV cache: context size " + std::to_string(capacity) + " must be between 1 and the model's " +
                "max_position_embeddings (" + std::to_string(config.max_position_embeddings) + ")");
  }
  if (num_layers_ < 1 || num_kv_heads_ < 1 || head_dim_ < 1) {
    throw Error("KV cache: config has num_hidden_layers " + std::to_string(num_layers_) +
                ", num_key_value_heads " + std::to_string(num_kv_heads_) + ", head_dim " +
                std::to_string(head_dim_) + "; all must be positive");
  }
  // Zero-filled so that reading past size() can never see garbage (it is masked anyway), and resident only
  // as far as positions are written: a context of 4096 positions costs FastVLM-0.5B 96 MiB, most of it
  // unused by a short conversation.
  storage_ = ZeroedPages(sizeof(float) * size_t(num_layers_) * 2 * size_t(num_kv_heads_) * size_t(capacity_) *
                             size_t(head_dim_),
                         "a KV cache");
}

void KVCache::commit(int count) {
  if (count < 0 || count > capacity_ - size_) {
    throw Error("KV cache: cannot add " + std::to_string(count) + " positions to " + std::to_string(size_) +
                " with a context size of " + std::to_string(capacity_));
  }
  size_ += count;
}

void KVCache::truncate(int new_size) {
  if (new_size < 0 || new_size > size_) {
    throw Error("KV cache: cannot truncate " + std::to_string(size_) + " positions to " +
                std::to_string(new_size));
  }
  size_ = new_size;
}

}  // namespace fastvlm
