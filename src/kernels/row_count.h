#pragma once
// Compile-time row counts for kernels that keep one accumulator set per activation row in registers.
#include <cstdint>

namespace fastvlm::kernels {

// Calls body.template operator()<R>() with R = n (1 <= n <= Max): the row count of a register tile must be
// a compile-time constant.
template <int Max, typename Body>
[[gnu::always_inline]] inline void with_row_count(int64_t n, Body&& body) {
  if constexpr (Max > 1) {
    if (n < Max) return with_row_count<Max - 1>(n, body);
  }
  body.template operator()<Max>();
}

}  // namespace fastvlm::kernels
