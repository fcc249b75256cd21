#pragma once
// Memory for weights copied or converted at load and kept for the model's life (block-quantised LLM
// linears), on transparent huge pages. A decode step streams every such weight once: on 4 KiB pages each
// page is a TLB miss and a page walk (an AMX tile load of 16 rows of a wide layer touches 16 pages), and on
// this project's AMX Xeon (THP in madvise mode) a mapped FastVLM-0.5B q8_0 checkpoint decoded in 2.2x and
// q4_0 in 1.24x the single-thread CPU time of the same codes on huge pages (bench/weight_pages.sh). The
// price is at load: the kernel zeroes the fresh pages before the codes are written. Weights are packed into 64 MiB blocks rather than given an allocation each,
// which would round every one up to a whole number of 2 MiB pages.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace fastvlm {

class WeightArena {
 public:
  // `bytes` of uninitialised memory, 64-byte aligned, valid while the arena lives. Not thread-safe: a
  // model fills its arena while it loads.
  void* allocate(size_t bytes);

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::vector<std::unique_ptr<void, Free>> blocks_;
  uint8_t* next_ = nullptr;  // the unused rest of the newest block
  size_t left_ = 0;
};

}  // namespace fastvlm
