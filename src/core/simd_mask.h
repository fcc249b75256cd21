#pragma once
// Lane masks for the last, partial 16-float block of an AVX-512 loop.
#include <immintrin.h>

#include <cstdint>

namespace fastvlm::simd {

// Lanes [0, count) of a 16-lane block, count clamped to [0, 16].
inline __mmask16 first_lanes(int64_t count) {
  return count >= 16 ? __mmask16(0xffff) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1);
}

}  // namespace fastvlm::simd
