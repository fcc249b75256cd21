#pragma once
// Prefill GEMM on block-quantised weights (Q8_0 / Q4_0, core/quant.h) for CPUs with AMX-BF16: the weights
// are expanded to bfloat16 one panel of output rows at a time (the panel stays in the core's L2 cache) and
// multiplied with the bfloat16 activations by TDPBF16PS on AMX tiles. On such CPUs the tiles multiply
// several times faster than linear_quant's VPDPBUSD (kernels/qgemm.h), which outweighs expanding the
// weights. (oneDNN's bf16 matmul on each panel was slower: it re-packs every panel, and with the output's
// row stride it leaves AMX for an AVX512-BF16 GEMM.)
//
// Arithmetic: x and dequant(W) are each rounded to bfloat16 (relative error <= 2^-9 per element), their
// products accumulated in float32. Unlike linear_quant, small activations keep their relative precision
// instead of being rounded to a step of their group's max|x| / 127.
#include <cstdint>
#include <span>

#include "core/quant.h"

namespace fastvlm {

// y[rows, N] = x[rows, K] · dequant(W)ᵀ (+ bias[N] when not null) for W = `weights` [N, K], all
// row-major float32 except W. Threads over panels with OpenMP. Throws fastvlm::Error when
// !amx_bf16_available() (kernels/capabilities.h).
void linear_quant_bf16(const float* x, int64_t rows, const QuantMatrix& weights, const float* bias, float* y);

// One input through several weights (QuantProduct, core/quant.h): x converted to bfloat16 and packed for
// the tiles once for all of them. Every W_i has K columns; y_i is [rows, W_i.rows].
void linear_quant_bf16(const float* x, int64_t rows, std::span<const QuantProduct> products);

}  // namespace fastvlm
