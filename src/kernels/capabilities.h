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
// oneDNN's s8 products (AVX512-VNNI; its AVX2 ones saturate on symmetric codes, kernels/avx2_int8_gemm.h).
bool int8_compute_available();
// The vision tower's int8 compute (Precision::Int8): its s8 products (AMX tiles, oneDNN's AVX512-VNNI matmul,
// or 16-bit pairs on AVX2) and the int8 quantisation and epilogues (kernels/int8_epilogue.h). AVX2 and up.
bool vision_int8_available();
// The int8 GEMM on block-quantised (Q8_0 / Q4_0) LLM weights, linear_quant (kernels/qgemm.h): VPDPBUSD on
// AVX512-VNNI, VPMADDWD on int16 codes on AVX2. Only that product (the vision tower's: vision_int8_available).
bool quant_int8_gemm_available();
// int8 tile products (AMX): gemv_quant_batch's fast path and the vision tower's s8 GEMMs (amx_s8_gemm).
bool int8_tiles_available();
// Rows per block in which to store block-quantised codes (QuantMatrix::row_block, core/quant.h) for the
// decode GEMV of the active level: kQuantRowBlock where it reads a block's rows side by side (AVX-512 and
// AMX), 1 (plain rows) where it reads a row at a time (AVX2, scalar). Every kernel reads either layout.
int quant_row_block();
// The active kernel level for error messages, e.g. "avx2".
std::string kernel_level_name();
// Throws fastvlm::Error naming `what` where the active kernel level is below AVX2 (the AVX2 kernels' entry points).
void require_avx2(const char* what);

}  // namespace fastvlm::kernels
