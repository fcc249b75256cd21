#pragma once
// The positions of a prompt (text token ids and image embedding rows), and a KV cache with the content of
// the positions it holds, so that a new prompt prefills only what differs from what the cache already has.
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "llm/kv_cache.h"
#include "vlm/engine_impl.h"

namespace fastvlm {

// Each position has a key that identifies its content (token id, or image hash and row), so two prompts
// can be compared for a shared prefix.
struct Sequence {
  std::vector<uint64_t> keys;
  std::vector<int32_t> ids;         // kImageMarker at image positions
  std::vector<const float*> rows;   // the embedding row of image positions, nullptr for text
  std::vector<int32_t> prompt_ids;  // the tokenized prompt, one kImageMarker per image
  std::vector<std::shared_ptr<const std::vector<float>>> images;  // keep `rows` valid

  void add_text(std::span<const int32_t> tokens);
  void add_image(const EncodedImage& image, int tokens, int hidden);
  // Tokenized prompt ids with markers, each marker taking the next image in order.
  void add_prompt(std::span<const int32_t> prompt_ids, std::span<const EncodedImage> images, int tokens, int hidden);
  int size() const { return int(keys.size()); }
};

// A KV cache and what its positions hold: the content keys (for prefix reuse) and the token ids
// (kImageMarker at image positions; the repetition penalty's history).
struct SequenceCache {
  SequenceCache(const TextConfig& config, int capacity) : cache(config, capacity) {}
  KVCache cache;
  std::vector<uint64_t> keys;
  std::vector<int32_t> tokens;

  // Positions at the start of `sequence` the cache already holds.
  int shared_prefix(const Sequence& sequence) const;
  void truncate(int size);
  void clear() { truncate(0); }
};

}  // namespace fastvlm
