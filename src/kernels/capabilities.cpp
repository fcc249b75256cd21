#include "kernels/capabilities.h"

#include "core/cpu.h"
#include "core/error.h"

namespace fastvlm::kernels {

bool bf16_compute_available() { return active_isa() >= Isa::Avx512; }

bool amx_bf16_available() { return active_isa() >= Isa::Amx; }

bool int8_compute_available() { return active_isa() >= Isa::Avx512 && cpu_features().avx512_vnni; }

bool vision_int8_available() { return active_isa() >= Isa::Avx2; }

bool quant_int8_gemm_available() { return active_isa() >= Isa::Avx2; }

bool int8_tiles_available() { return active_isa() >= Isa::Amx; }

std::string kernel_level_name() { return std::string(isa_name(active_isa())); }

void require_avx2(const char* what) {
  if (active_isa() < Isa::Avx2)
    throw Error(std::string(what) + ": needs AVX2, which this CPU (or FASTVLM_ISA=" + kernel_level_name() +
                ") does not offer");
}

}  // namespace fastvlm::kernels
