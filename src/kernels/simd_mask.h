#pragma once
// Lane masks for the last, partial block of an AVX-512 or AVX2 loop.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/target.h"

namespace fastvlm::simd {

// Lanes [0, count) of a block of Lanes (16: floats or int32; 32: 16-bit elements), count clamped to
// [0, Lanes].
template <int Lanes = 16>
inline auto first_lanes(int64_t count) {
  static_assert(Lanes == 16 || Lanes == 32, "a zmm holds 16 or 32 of the elements the kernels mask");
  using Mask = std::conditional_t<Lanes == 16, __mmask16, __mmask32>;
  return count >= Lanes ? Mask(~Mask(0)) : count <= 0 ? Mask(0) : Mask((uint64_t(1) << count) - 1);
}

// The same for an AVX2 loop of 32-bit lanes, as the vector mask VMASKMOV takes: lanes [0, count) all ones.
FASTVLM_TARGET_AVX2 inline __m256i first_lanes_avx2(int64_t count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::clamp<int64_t>(count, 0, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace fastvlm::simd
