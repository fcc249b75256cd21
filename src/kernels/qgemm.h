#pragma once
// Prefill GEMM on block-quantised weights (Q8_0 / Q4_0, core/quant.h) in integer arithmetic (VPDPBUSD
// with AVX512-VNNI, VPMADDWD on codes widened to int16 with AVX2), reading the codes straight from the
// (memory-mapped) matrix: no dequantised or repacked copy of the weights outlives the call.
//
// Arithmetic (the same model as gemv_quant, so prefill and decode agree): each row of x is quantised per
// group of 32 to int8 with scale d_x = max|x| / 127 (round to nearest even); each group's integer dot
// product with the weight codes is exact in int32, then scaled by d_w · d_x and summed in float. The only
// approximation against dequant(W)·x is the activation rounding, at most d_x / 2 per element.
#include <cstdint>
#include <span>

#include "core/quant.h"

namespace fastvlm {

// y[rows, N] = x[rows, K] · dequant(W)ᵀ (+ bias[N] when not null) for W = `weights` [N, K], all
// row-major float32 except W. Threads over blocks of output columns with OpenMP. Throws fastvlm::Error
// when !quant_int8_gemm_available() (kernels/capabilities.h).
void linear_quant(const float* x, int64_t rows, const QuantMatrix& weights, const float* bias, float* y);

// One input through several weights (QuantProduct, core/quant.h: a layer's q/k/v or gate/up projections):
// x quantised once for all of them, and all their panels of output columns shared out in one parallel loop.
// Every W_i has K columns; y_i is [rows, W_i.rows]. The same results as linear_quant on each, bit for bit.
void linear_quant(const float* x, int64_t rows, std::span<const QuantProduct> products);

}  // namespace fastvlm
