#pragma once
// Element types found in checkpoints (DType), how a weight matrix is stored (WeightType), and scalar
// conversions between them.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace fastvlm {

enum class DType : uint8_t { F32, F16, BF16, I64, I32, I8, U8 };

size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // safetensors spelling: "F32", "BF16", ...

// The storage of a weight matrix, whatever layer holds it: float32, bfloat16, the Q8_0/Q4_0 blocks of a
// `fastvlm quantize`d checkpoint (layout in core/quant.h), or S8: int8 codes with one float32 scale per
// output row, quantised at load (the vision tower's int8 layers; never on disk).
enum class WeightType : uint8_t { F32, BF16, Q8_0, Q4_0, S8 };

std::string_view weight_type_name(WeightType type);  // "f32", "bf16", "q8_0" (quantization.type), "q4_0", "s8"

inline float bf16_to_f32(uint16_t bits) {
  uint32_t widened = uint32_t(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof value);
  return value;
}

// Round to nearest even, as PyTorch and the AVX512-BF16 instructions do; NaN stays NaN.
inline uint16_t f32_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t bits);

// Converts `count` elements of `src` (stored as `dtype`, F32/F16/BF16) to float.
void convert_to_f32(DType dtype, const void* src, float* dst, size_t count);

}  // namespace fastvlm
