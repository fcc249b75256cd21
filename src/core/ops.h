#pragma once
// Scalar activation functions: the reference the vectorised kernels (kernels/activations.h) are held to,
// and their scalar variants.
#include <cmath>

namespace fastvlm {

// GELU in the exact erf form used by PyTorch's nn.GELU() default.
inline float gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752440f)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace fastvlm
