#include "vlm/sequence.h"

#include <algorithm>

#include "core/error.h"

namespace fastvlm {

void Sequence::add_text(std::span<const int32_t> tokens) {
  for (int32_t id : tokens) {
    keys.push_back(uint32_t(id));
    ids.push_back(id);
    rows.push_back(nullptr);
  }
}

void Sequence::add_image(const EncodedImage& image, int tokens, int hidden) {
  images.push_back(image.embeddings);
  for (int i = 0; i < tokens; ++i) {
    keys.push_back((image.key | (1ull << 63)) + uint64_t(i));  // never equal to a token id
    ids.push_back(text::kImageMarker);
    rows.push_back(image.embeddings->data() + size_t(i) * hidden);
  }
}

void Sequence::add_prompt(std::span<const int32_t> prompt_ids, std::span<const EncodedImage> images, int tokens,
                          int hidden) {
  this->prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());
  size_t next_image = 0;
  for (size_t i = 0; i < prompt_ids.size(); ++i) {
    if (prompt_ids[i] != text::kImageMarker) {
      add_text(prompt_ids.subspan(i, 1));
      continue;
    }
    if (next_image == images.size())
      throw Error("the prompt contains the text \"<image>\": images are placed by the engine, not by the prompt text");
    add_image(images[next_image++], tokens, hidden);
  }
  if (next_image != images.size()) throw Error("internal: an image has no place in the prompt");
}

int SequenceCache::shared_prefix(const Sequence& sequence) const {
  auto [mismatch, _] = std::mismatch(keys.begin(), keys.end(), sequence.keys.begin(), sequence.keys.end());
  return int(mismatch - keys.begin());
}

void SequenceCache::truncate(int size) {
  cache.truncate(size);
  keys.resize(size_t(size));
  tokens.resize(size_t(size));
}

}  // namespace fastvlm
