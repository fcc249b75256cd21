#pragma once
// Storage types found in checkpoints, and scalar conversions between them.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace fastvlm {

enum class DType : uint8_t { F32, F16, BF16, I64, I32, I8, U8 };

size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // safetensors spelling: "F32", "BF16", ...

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
