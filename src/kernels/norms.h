#pragma once
// Normalisation of rows of float32: RMSNorm (Qwen2's and LLaMA's decoders) and LayerNorm (the vision tower's
// LayerNormChannel), with AVX-512, AVX2 and scalar variants. Every variant sums in double precision, as the
// references do, and scales in float32 in the references' order; only the order of the double additions
// differs (the scalar loops add one element after another, each addition waiting for the last), so results
// match the scalar loops' to the last bit or within an ulp.
#include <cstdint>

namespace fastvlm {

// y[r] = weight ⊙ x[r] / sqrt(mean(x[r]²) + eps) for rows [0, rows) of `x` ([rows, hidden]), threaded over
// rows when there are many (a prefill's).
void rms_norm_rows(const float* x, const float* weight, int64_t rows, int64_t hidden, float eps, float* y);

// y = weight ⊙ (x - mean(x)) / sqrt(var(x) + eps) + bias over one row of `n` (the biased variance), on the
// calling thread.
void layer_norm_row(const float* x, const float* weight, const float* bias, int64_t n, float eps, float* y);

}  // namespace fastvlm
