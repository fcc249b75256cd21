#pragma once
// Lane masks for the last, partial block of an AVX-512 loop.
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

namespace fastvlm::simd {

// Lanes [0, count) of a block of Lanes (16: floats or int32; 32: 16-bit elements), count clamped to
// [0, Lanes].
template <int Lanes = 16>
inline auto first_lanes(int64_t count) {
  static_assert(Lanes == 16 || Lanes == 32, "a zmm holds 16 or 32 of the elements the kernels mask");
  using Mask = std::conditional_t<Lanes == 16, __mmask16, __mmask32>;
  return count >= Lanes ? Mask(~Mask(0)) : count <= 0 ? Mask(0) : Mask((uint64_t(1) << count) - 1);
}

}  // namespace fastvlm::simd
