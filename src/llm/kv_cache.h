#pragma once
// Keys and values of every decoder layer for the positions seen so far, so that each new token attends
// to the whole context without recomputing it.
#include <cstdint>

#include "core/tensor.h"
#include "llm/text_config.h"

namespace fastvlm {

// Layout: [layer][kv_head][position][head_dim]. Head-major rather than position-major because attention
// reads, per head, all positions of that head: K of one head is then a contiguous [positions, head_dim]
// matrix that a GEMM takes directly (ldb = head_dim), for prefill and decode alike. Appending a token costs
// a small strided write per head, which is negligible next to the projections.
class KVCache {
 public:
  // Room for `capacity` positions of a model with `config`'s dimensions. Throws fastvlm::Error when
  // capacity is not in [1, max_position_embeddings].
  KVCache(const TextConfig& config, int capacity);

  int size() const { return size_; }
  int capacity() const { return capacity_; }
  int num_layers() const { return num_layers_; }
  int num_kv_heads() const { return num_kv_heads_; }
  int head_dim() const { return head_dim_; }

  // [capacity, head_dim] blocks of one layer and KV head; rows [0, size()) hold valid positions.
  float* keys(int layer, int kv_head) { return storage_.as<float>() + block_offset(layer, kv_head, 0); }
  const float* keys(int layer, int kv_head) const { return storage_.as<float>() + block_offset(layer, kv_head, 0); }
  float* values(int layer, int kv_head) { return storage_.as<float>() + block_offset(layer, kv_head, 1); }
  const float* values(int layer, int kv_head) const {
    return storage_.as<float>() + block_offset(layer, kv_head, 1);
  }

  // Marks `count` more positions (already written into every layer past size()) as valid.
  // Throws fastvlm::Error when that would exceed capacity().
  void commit(int count);
  // Forgets every position from `new_size` on, e.g. to reuse a shared prompt prefix. Throws when
  // new_size is negative or larger than size().
  void truncate(int new_size);
  void clear() { size_ = 0; }

 private:
  size_t block_offset(int layer, int kv_head, int is_value) const {
    size_t block = (size_t(layer) * 2 + size_t(is_value)) * size_t(num_kv_heads_) + size_t(kv_head);
    return block * size_t(capacity_) * size_t(head_dim_);
  }

  int num_layers_;
  int num_kv_heads_;
  int head_dim_;
  int capacity_;
  int size_ = 0;
  ZeroedPages storage_;  // only the positions written so far are resident
};

}  // namespace fastvlm
