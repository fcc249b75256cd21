#pragma once
// RMSNorm over rows of float32 (Qwen2's and LLaMA's): y = weight ⊙ x / sqrt(mean(x²) + eps), with
// AVX-512, AVX2 and scalar variants. Every variant sums the squares in double precision, as the reference
// does, and scales in float32 in the reference's order (w · (x · inverse_rms)); only the order of the
// double additions differs, so results match the scalar loop's to the last bit or within an ulp.
#include <cstdint>

namespace fastvlm {

// Rows [0, rows) of `x` ([rows, hidden]) into `y`, threaded over rows when there are many (a prefill's).
void rms_norm_rows(const float* x, const float* weight, int64_t rows, int64_t hidden, float eps, float* y);

}  // namespace fastvlm
