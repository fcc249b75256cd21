#pragma once
// How every kernel picks its variant: a kernel keeps a table of function pointers per ISA level it is
// written for, and one of them is chosen once, at its first use, from active_isa() (which honours the
// FASTVLM_ISA cap). Entry points read the chosen table, so no call tests the ISA again; the loops that
// matter run inside the variants.
#include "core/cpu.h"

namespace fastvlm::kernels {

// A kernel's tables per level. A kernel without a variant at some level leaves that table
// value-initialised (null pointers), and its entry point refuses the call.
template <typename Table>
struct PerLevel {
  Table scalar{}, avx2{}, avx512{};
};

// The table for the active level (Amx runs the Avx512 variants: only oneDNN uses the tiles).
template <typename Table>
Table choose(const PerLevel<Table>& variants) {
  switch (active_isa()) {
    case Isa::Scalar: return variants.scalar;
    case Isa::Avx2: return variants.avx2;
    case Isa::Avx512:
    case Isa::Amx: return variants.avx512;
  }
  return variants.scalar;
}

}  // namespace fastvlm::kernels
