#include "core/weight_arena.h"

#include <algorithm>
#include <cstdlib>

#include "core/tensor.h"

namespace fastvlm {
namespace {

// Large enough that the abandoned tail of a block (never touched, so never resident) is rare; a weight
// larger than a block gets a block of its own.
constexpr size_t kBlockBytes = size_t(64) << 20;
constexpr size_t kAlignment = 64;

}  // namespace

void* WeightArena::allocate(size_t bytes) {
  bytes = std::max<size_t>(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  if (bytes > left_) {
    const size_t block = std::max(bytes, kBlockBytes);
    blocks_.emplace_back(allocate_aligned(block, "weights", /*huge_pages=*/true));
    next_ = static_cast<uint8_t*>(blocks_.back().get());
    left_ = block;
  }
  void* memory = next_;
  next_ += bytes;
  left_ -= bytes;
  return memory;
}

void WeightArena::Free::operator()(void* p) const { std::free(p); }

}  // namespace fastvlm
