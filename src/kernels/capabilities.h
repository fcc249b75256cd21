#pragma once
// What the kernels can compute on this CPU at the active level (FASTVLM_ISA caps it), for model code that
// chooses between compute paths without naming instruction sets.
#include <string>

namespace fastvlm::kernels {

// bfloat16 GEMMs and attention (AVX512-BF16, AMX where present).
bool bf16_compute_available();
// bfloat16 products on AMX tiles (AMX-BF16 with the OS permission granted): where tile GEMMs far outrun
// the AVX-512 ones.
bool amx_bf16_available();
// int8 GEMMs (AVX512-VNNI: the vision tower's int8 compute, the quantised LLM prefill GEMM).
bool int8_compute_available();
// int8 tile products (AMX): gemv_quant_batch's fast path and the vision tower's s8 GEMMs (amx_s8_gemm).
bool int8_tiles_available();
// The active kernel level for error messages, e.g. "avx2".
std::string kernel_level_name();

}  // namespace fastvlm::kernels
