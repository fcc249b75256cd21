#pragma once
// A std::vector whose storage starts on a 64-byte boundary (a cache line, one zmm register). For the small
// per-call buffers that SIMD kernels load 32 or 64 bytes at a time in their inner loops: from malloc's
// 16-byte alignment every such load spans two cache lines. Measured on AMD Zen 5 (one thread, the decode
// GEMV with its weights in L2, `BM_GemvCached`, medians of 3 alternations per shape): the activation codes
// 64-byte aligned made Q8_0 5-21% and Q4_0 2-8% faster.
#include <cstddef>
#include <cstdlib>
#include <vector>

#include "core/tensor.h"

namespace fastvlm {

template <class T>
struct CacheLineAllocator {
  using value_type = T;

  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}

  T* allocate(size_t count) { return static_cast<T*>(allocate_aligned(count * sizeof(T), "a SIMD buffer")); }
  void deallocate(T* p, size_t) { std::free(p); }

  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const {
    return true;
  }
};

template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace fastvlm
