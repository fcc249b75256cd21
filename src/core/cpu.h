#pragma once
// Which SIMD instruction sets this CPU (and OS) offers, and which kernel level to run.
//
// The library is compiled for the x86-64-v2 baseline; faster kernels are compiled per function with
// target attributes and chosen at run time from active_isa(). Levels are cumulative:
//   Scalar  - baseline only (SSE4.2): portable C++ loops
//   Avx2    - AVX2 + FMA + F16C
//   Avx512  - AVX-512 F/BW/VL/DQ + VNNI + BF16 (Cooper Lake, Sapphire Rapids, Zen 4 and later); CPUs with
//             AVX-512 but without BF16 (Skylake-X, Ice Lake) run the Avx2 kernels
//   Amx     - Avx512 plus AMX-TILE/BF16/INT8 with the OS permission granted; only oneDNN uses the tiles
// The environment variable FASTVLM_ISA=scalar|avx2|avx512|amx caps the level (it never raises it above
// what the CPU has), so that the slower paths can be tested on a fast machine. It also caps oneDNN's JIT.
#include <string_view>

namespace fastvlm {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512_vnni = false, avx512_bf16 = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
  bool amx_permitted = false;  // the kernel granted this process the AMX tile state (Linux arch_prctl)
};

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2, Amx = 3 };

// Read once from cpuid/xgetbv (and arch_prctl for AMX).
const CpuFeatures& cpu_features();
// The best level the CPU supports.
Isa detected_isa();
// detected_isa(), capped by FASTVLM_ISA. Throws fastvlm::Error for an unknown FASTVLM_ISA value.
Isa active_isa();
std::string_view isa_name(Isa isa);

}  // namespace fastvlm
