#pragma once
// Matrix-vector products for LLM decoding, where every weight is read once per token and memory
// bandwidth is the limit: y[r] = W[r, :] · x for bf16 and block-quantised W, plus the small float
// vector kernels of decode attention. Hand-written for AVX-512 (BF16/VNNI) and AVX2, with a portable
// scalar version, chosen once from active_isa() (kernels/dispatch.h). Rows are split over the OpenMP threads.
//
// Arithmetic per path (what the tests hold each path to):
//   gemv_bf16, Avx512: x rounded to bf16, products summed in float (VDPBF16PS).
//              Avx2/Scalar: W widened to float, x kept in float.
//   gemv_quant: x is quantised per 32-group to int8 (scale max|x|/127, round to nearest even), each
//              group's integer dot product is exact, then scaled by d_w * d_x and summed in float; every
//              ISA path computes exactly this (up to float summation order).
#include <cstdint>
#include <span>

#include "core/quant.h"

namespace fastvlm {

// y[rows] = W[rows, cols] · x[cols], W row-major bf16.
void gemv_bf16(const uint16_t* weights, int64_t rows, int64_t cols, const float* x, float* y);

// y[matrix.rows] = W · x for a Q8_0 / Q4_0 matrix.
void gemv_quant(const QuantMatrix& matrix, const float* x, float* y);

// ys[i] = matrices[i] · x for matrices of one type and width on the same input (a decoder layer's q, k and
// v, or its gate and up): x is quantised once, and the rows of all of them are split over the threads
// together, in one parallel region rather than one per matrix. ys[i] is bit-identical to
// gemv_quant(*matrices[i], x, ys[i]).
void gemv_quant_shared(std::span<const QuantMatrix* const> matrices, const float* x, std::span<float* const> ys);

// The same for several activation rows at once (batched decoding): y[i, :] = W · x[i, :] for x [x_rows, cols]
// and y [x_rows, rows], reading each weight from memory once for all rows. Row i's result is bit-identical
// to the single-row call on x[i, :] (same activation rounding, same summation order), so a sequence decodes
// the same alone or in a batch.
void gemv_bf16_rows(const uint16_t* weights, int64_t rows, int64_t cols, const float* x, int64_t x_rows, float* y);
void gemv_quant_rows(const QuantMatrix& matrix, const float* x, int64_t x_rows, float* y);

// The same product where a row's result may differ from the single-row call in float summation order (same
// activation codes and scales, same exact integer group products), for batches of decoding rows: with the
// int8 tiles (kernels::int8_tiles_available) up to 16 rows cost little more than one, as each tile product
// covers 16 weight rows x 16 activation rows x one group. Without them it is gemv_quant_rows.
void gemv_quant_batch(const QuantMatrix& matrix, const float* x, int64_t x_rows, float* y);

// Decode attention of the `count` query heads that share one key/value head, over `positions` cached
// positions of `dim` floats each (single-threaded: callers parallelise over heads). Each cached key and
// value is read once for all `count` queries, where a loop per head would read it `count` times.
//   attention_scores_f32: scores[j * score_stride + p] = scale · (queries[j * dim ..] · keys[p * dim ..])
//   attention_values_f32: out[j * dim ..] = Σ_p weights[j * weight_stride + p] · values[p * dim ..]
// A score, and an output summed over p in order, comes out the same whatever `count` is.
void attention_scores_f32(const float* queries, int64_t count, const float* keys, int64_t positions, int64_t dim,
                          float scale, float* scores, int64_t score_stride);
void attention_values_f32(const float* weights, int64_t weight_stride, int64_t count, const float* values,
                          int64_t positions, int64_t dim, float* out);

}  // namespace fastvlm
