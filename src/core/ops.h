#pragma once
// Element-wise and row-wise float32 operations shared by the vision tower and the LLM.
#include <cmath>
#include <cstdint>

namespace fastvlm {

// GELU in the exact erf form used by PyTorch's nn.GELU() default.
inline float gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752440f)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

// In-place numerically stable softmax of each of `rows` rows of length `cols`.
void softmax_rows(float* x, int64_t rows, int64_t cols);

}  // namespace fastvlm
