#include "kernels/capabilities.h"

#include "core/cpu.h"
#include "core/error.h"
#include "core/quant.h"

namespace fastvlm::kernels {

bool bf16_compute_available() { return active_isa() >= Isa::Avx512; }

bool amx_bf16_available() { return active_isa() >= Isa::Amx; }

bool int8_compute_available() { return active_isa() >= Isa::Avx512 && cpu_features().avx512_vnni; }

bool vision_int8_available() { return active_isa() >= Isa::Avx2; }

bool quant_int8_gemm_available() { return active_isa() >= Isa::Avx2; }

bool int8_tiles_available() { return active_isa() >= Isa::Amx; }

// Measured on AMD Zen 4, two threads, the Q8_0 / Q4_0 decode shapes from DRAM: the AVX-512 kernel ran
// 1.1-2x faster on blocks than on plain rows, the AVX2 kernel 1.3-2.8x slower (it then reads each row as
// every fourth chunk).
int quant_row_block() { return active_isa() >= Isa::Avx512 ? kQuantRowBlock : 1; }

std::string kernel_level_name() { return std::string(isa_name(active_isa())); }

void require_avx2(const char* what) {
  if (active_isa() < Isa::Avx2)
    throw Error(std::string(what) + ": needs AVX2, which this CPU (or FASTVLM_ISA=" + kernel_level_name() +
                ") does not offer");
}

}  // namespace fastvlm::kernels
