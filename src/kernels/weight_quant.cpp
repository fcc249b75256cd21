#include "kernels/weight_quant.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/dispatch.h"
#include "kernels/quant_simd.h"
#include "kernels/target.h"

// GCC 12 flags the deliberately undefined upper halves inside its own AVX-512 reduction intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastvlm {
namespace {

// Quantises one row of `cols` weights; returns the index in the row of its first NaN or infinity, or -1.
using RowQuantizer = int64_t (*)(WeightType type, DType source, const void* row, int64_t cols, uint8_t* codes,
                                 uint16_t* scales);

// Each group's arithmetic, at every level, is core/quant.cpp's in the same order: the largest magnitude (a
// NaN never wins: NaNs are reported, not quantised), the scale rounded to half (round to nearest even, as
// f32_to_f16), the inverse of the rounded scale, each code rounded to nearest even and clamped.

// ---------------------------------------------------------------------------------------------------------
// Scalar: widen and hand the row to core.

int64_t quantize_row_scalar(WeightType type, DType source, const void* row, int64_t cols, uint8_t* codes,
                            uint16_t* scales) {
  thread_local std::vector<float> widened;
  widened.resize(size_t(cols));
  convert_to_f32(source, row, widened.data(), size_t(cols));
  const auto bad = std::find_if(widened.begin(), widened.end(), [](float w) { return !std::isfinite(w); });
  if (bad != widened.end()) return bad - widened.begin();
  quantize_matrix_row(type, widened.data(), cols, codes, scales);
  return -1;
}

// ---------------------------------------------------------------------------------------------------------
// AVX-512: a group is two vectors of 16.

// 16 weights from element i of a row stored as `Source`, widened exactly to float32.
template <DType Source>
FASTVLM_TARGET_AVX512 inline __m512 load16(const void* row, int64_t i) {
  if constexpr (Source == DType::F32) {
    return _mm512_loadu_ps(static_cast<const float*>(row) + i);
  } else {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + i));
    if constexpr (Source == DType::BF16)
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
    else
      return _mm512_cvtph_ps(bits);
  }
}

// The lanes of NaNs and infinities (FPCLASS: quiet NaN, +infinity, -infinity, signalling NaN).
FASTVLM_TARGET_AVX512 inline __mmask16 non_finite16(__m512 v) { return _mm512_fpclass_ps_mask(v, 0x01 | 0x08 | 0x10 | 0x80); }

FASTVLM_TARGET_AVX512 inline __m512i clamp16(__m512i codes, int low, int high) {
  return _mm512_min_epi32(_mm512_max_epi32(codes, _mm512_set1_epi32(low)), _mm512_set1_epi32(high));
}

// The largest of the group's magnitudes. MAXPS returns its second operand when the first is a NaN, as
// std::max(largest, NaN) keeps largest.
FASTVLM_TARGET_AVX512 inline float largest_magnitude16(__m512 abs_low, __m512 abs_high) {
  return _mm512_reduce_max_ps(_mm512_max_ps(abs_high, _mm512_max_ps(abs_low, _mm512_setzero_ps())));
}

FASTVLM_TARGET_AVX512 inline void quantize_group_q8(__m512 low, __m512 high, uint8_t* codes, uint16_t* scale) {
  const float largest = largest_magnitude16(_mm512_abs_ps(low), _mm512_abs_ps(high));
  *scale = _cvtss_sh(largest / 127.0f, _MM_FROUND_TO_NEAREST_INT);
  const float d = _cvtsh_ss(*scale);
  const __m512 inverse = _mm512_set1_ps(d == 0 ? 0.0f : 1.0f / d);
  // CVTPS2DQ rounds to nearest even under the default MXCSR, as std::nearbyint.
  const __m512i low_codes = clamp16(_mm512_cvtps_epi32(_mm512_mul_ps(low, inverse)), -127, 127);
  const __m512i high_codes = clamp16(_mm512_cvtps_epi32(_mm512_mul_ps(high, inverse)), -127, 127);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(low_codes));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + 16), _mm512_cvtepi32_epi8(high_codes));
}

FASTVLM_TARGET_AVX512 inline void quantize_group_q4(__m512 low, __m512 high, uint8_t* codes, uint16_t* scale) {
  const __m512 abs_low = _mm512_abs_ps(low), abs_high = _mm512_abs_ps(high);
  const float largest = largest_magnitude16(abs_low, abs_high);
  // The signed weight of largest magnitude, the first of equals (core keeps the first on a tie); +0 when all
  // are zeros.
  float extreme = 0.0f;
  if (largest > 0) {
    const __m512 target = _mm512_set1_ps(largest);
    const uint32_t at_largest = uint32_t(_mm512_cmp_ps_mask(abs_low, target, _CMP_EQ_OQ)) |
                                uint32_t(_mm512_cmp_ps_mask(abs_high, target, _CMP_EQ_OQ)) << 16;
    alignas(64) float group[kQuantGroupSize];
    _mm512_store_ps(group, low);
    _mm512_store_ps(group + 16, high);
    extreme = group[__builtin_ctz(at_largest)];
  }
  *scale = _cvtss_sh(extreme / -8.0f, _MM_FROUND_TO_NEAREST_INT);
  const float d = _cvtsh_ss(*scale);
  const __m512 inverse = _mm512_set1_ps(d == 0 ? 0.0f : 1.0f / d);
  const __m512i eight = _mm512_set1_epi32(8);
  const __m512i low_codes = _mm512_add_epi32(clamp16(_mm512_cvtps_epi32(_mm512_mul_ps(low, inverse)), -8, 7), eight);
  const __m512i high_codes = _mm512_add_epi32(clamp16(_mm512_cvtps_epi32(_mm512_mul_ps(high, inverse)), -8, 7), eight);
  // Byte j: weight j in the low nibble, weight j + 16 in the high one.
  const __m512i bytes = _mm512_or_si512(low_codes, _mm512_slli_epi32(high_codes, 4));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(bytes));
}

template <WeightType Type, DType Source>
FASTVLM_TARGET_AVX512 int64_t quantize_row_avx512(const void* row, int64_t cols, uint8_t* codes, uint16_t* scales) {
  const int64_t group_bytes = quant_row_bytes(Type, kQuantGroupSize);
  for (int64_t g = 0; g < cols / kQuantGroupSize; ++g) {
    const __m512 low = load16<Source>(row, g * kQuantGroupSize), high = load16<Source>(row, g * kQuantGroupSize + 16);
    if (const uint32_t bad = uint32_t(non_finite16(low)) | uint32_t(non_finite16(high)) << 16)
      return g * kQuantGroupSize + __builtin_ctz(bad);
    if constexpr (Type == WeightType::Q8_0)
      quantize_group_q8(low, high, codes + g * group_bytes, scales + g);
    else
      quantize_group_q4(low, high, codes + g * group_bytes, scales + g);
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------------------
// AVX2: a group is four vectors of 8.

template <DType Source>
FASTVLM_TARGET_AVX2 inline __m256 load8(const void* row, int64_t i) {
  if constexpr (Source == DType::F32) {
    return _mm256_loadu_ps(static_cast<const float*>(row) + i);
  } else {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i));
    if constexpr (Source == DType::BF16)
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
    else
      return _mm256_cvtph_ps(bits);
  }
}

FASTVLM_TARGET_AVX2 inline __m256i clamp8(__m256i codes, int low, int high) {
  return _mm256_min_epi32(_mm256_max_epi32(codes, _mm256_set1_epi32(low)), _mm256_set1_epi32(high));
}

// The group's largest magnitude (NaNs passed over, as largest_magnitude16) and the magnitudes.
FASTVLM_TARGET_AVX2 inline float largest_magnitude8(const __m256 (&values)[4], __m256 (&magnitudes)[4]) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256 lanes = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    magnitudes[i] = _mm256_andnot_ps(sign_bit, values[i]);
    lanes = _mm256_max_ps(magnitudes[i], lanes);
  }
  return simd::reduce_max_avx2(lanes);
}

FASTVLM_TARGET_AVX2 inline void quantize_group_q8(const __m256 (&values)[4], uint8_t* codes, uint16_t* scale) {
  __m256 magnitudes[4];
  const float largest = largest_magnitude8(values, magnitudes);
  *scale = _cvtss_sh(largest / 127.0f, _MM_FROUND_TO_NEAREST_INT);
  const float d = _cvtsh_ss(*scale);
  const __m256 inverse = _mm256_set1_ps(d == 0 ? 0.0f : 1.0f / d);
  __m256i words[4];
  for (int i = 0; i < 4; ++i) words[i] = clamp8(_mm256_cvtps_epi32(_mm256_mul_ps(values[i], inverse)), -127, 127);
  simd::store_codes_avx2(words, reinterpret_cast<int8_t*>(codes));
}

FASTVLM_TARGET_AVX2 inline void quantize_group_q4(const __m256 (&values)[4], uint8_t* codes, uint16_t* scale) {
  __m256 magnitudes[4];
  const float largest = largest_magnitude8(values, magnitudes);
  float extreme = 0.0f;  // as in the AVX-512 variant
  if (largest > 0) {
    const __m256 target = _mm256_set1_ps(largest);
    uint32_t at_largest = 0;
    for (int i = 0; i < 4; ++i)
      at_largest |= uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(magnitudes[i], target, _CMP_EQ_OQ))) << (8 * i);
    const int first = __builtin_ctz(at_largest);
    alignas(32) float vector[8];
    _mm256_store_ps(vector, values[first / 8]);
    extreme = vector[first % 8];
  }
  *scale = _cvtss_sh(extreme / -8.0f, _MM_FROUND_TO_NEAREST_INT);
  const float d = _cvtsh_ss(*scale);
  const __m256 inverse = _mm256_set1_ps(d == 0 ? 0.0f : 1.0f / d);
  __m256i words[4];
  for (int i = 0; i < 4; ++i)
    words[i] = _mm256_add_epi32(clamp8(_mm256_cvtps_epi32(_mm256_mul_ps(values[i], inverse)), -8, 7),
                                _mm256_set1_epi32(8));
  // Byte j: weight j in the low nibble, weight j + 16 in the high one; then 16 int32 -> 16 bytes in order
  // (the 16-bit pack works within 128-bit lanes, which the 64-bit permutation puts back in order).
  const __m256i first_half = _mm256_or_si256(words[0], _mm256_slli_epi32(words[2], 4));
  const __m256i second_half = _mm256_or_si256(words[1], _mm256_slli_epi32(words[3], 4));
  const __m256i halves = _mm256_permute4x64_epi64(_mm256_packs_epi32(first_half, second_half), 0xD8);
  const __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(halves), _mm256_extracti128_si256(halves, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), bytes);
}

template <WeightType Type, DType Source>
FASTVLM_TARGET_AVX2 int64_t quantize_row_avx2(const void* row, int64_t cols, uint8_t* codes, uint16_t* scales) {
  const int64_t group_bytes = quant_row_bytes(Type, kQuantGroupSize);
  const __m256 infinity = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  for (int64_t g = 0; g < cols / kQuantGroupSize; ++g) {
    __m256 values[4];
    uint32_t bad = 0;
    for (int i = 0; i < 4; ++i) {
      values[i] = load8<Source>(row, g * kQuantGroupSize + 8 * i);
      // |w| not below infinity, or unordered: an infinity or a NaN.
      const __m256 not_finite = _mm256_cmp_ps(_mm256_andnot_ps(sign_bit, values[i]), infinity, _CMP_NLT_UQ);
      bad |= uint32_t(_mm256_movemask_ps(not_finite)) << (8 * i);
    }
    if (bad) return g * kQuantGroupSize + __builtin_ctz(bad);
    if constexpr (Type == WeightType::Q8_0)
      quantize_group_q8(values, codes + g * group_bytes, scales + g);
    else
      quantize_group_q4(values, codes + g * group_bytes, scales + g);
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------------------

// The level's row function for a (type, source) pair.
template <template <WeightType, DType> class Row>
int64_t quantize_row_with(WeightType type, DType source, const void* row, int64_t cols, uint8_t* codes,
                          uint16_t* scales) {
  const bool q8 = type == WeightType::Q8_0;
  switch (source) {
    case DType::F32:
      return q8 ? Row<WeightType::Q8_0, DType::F32>::run(row, cols, codes, scales)
                : Row<WeightType::Q4_0, DType::F32>::run(row, cols, codes, scales);
    case DType::BF16:
      return q8 ? Row<WeightType::Q8_0, DType::BF16>::run(row, cols, codes, scales)
                : Row<WeightType::Q4_0, DType::BF16>::run(row, cols, codes, scales);
    case DType::F16:
      return q8 ? Row<WeightType::Q8_0, DType::F16>::run(row, cols, codes, scales)
                : Row<WeightType::Q4_0, DType::F16>::run(row, cols, codes, scales);
    default:
      throw Error("internal: quantize_weight_rows reads F32, BF16 or F16");
  }
}

template <WeightType Type, DType Source>
struct Avx512Row {
  static int64_t run(const void* row, int64_t cols, uint8_t* codes, uint16_t* scales) {
    return quantize_row_avx512<Type, Source>(row, cols, codes, scales);
  }
};
template <WeightType Type, DType Source>
struct Avx2Row {
  static int64_t run(const void* row, int64_t cols, uint8_t* codes, uint16_t* scales) {
    return quantize_row_avx2<Type, Source>(row, cols, codes, scales);
  }
};

struct WeightQuantOps {
  RowQuantizer row;
};

const WeightQuantOps& ops() {
  static const WeightQuantOps chosen = kernels::choose<WeightQuantOps>({
      .scalar = {quantize_row_scalar},
      .avx2 = {quantize_row_with<Avx2Row>},
      .avx512 = {quantize_row_with<Avx512Row>},
  });
  return chosen;
}

}  // namespace

int64_t quantize_weight_rows(WeightType type, DType source, const void* weights, int64_t rows, int64_t cols,
                             uint8_t* codes, uint16_t* scales) {
  if ((type != WeightType::Q8_0 && type != WeightType::Q4_0) || cols % kQuantGroupSize != 0 || rows < 0 ||
      (source != DType::F32 && source != DType::BF16 && source != DType::F16))
    throw Error("internal: quantize_weight_rows to " + std::string(weight_type_name(type)) + " from " +
                std::string(dtype_name(source)) + " with " + std::to_string(cols) + " columns");
  const RowQuantizer quantize_row = ops().row;
  const int64_t row_bytes = quant_row_bytes(type, cols), groups = cols / kQuantGroupSize;
  const auto* bytes = static_cast<const uint8_t*>(weights);
  const int64_t source_row_bytes = cols * int64_t(dtype_size(source));
  int64_t first_bad = std::numeric_limits<int64_t>::max();
#pragma omp parallel for schedule(static) reduction(min : first_bad)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t at = quantize_row(type, source, bytes + r * source_row_bytes, cols, codes + r * row_bytes,
                                    scales + r * groups);
    if (at >= 0) first_bad = std::min(first_bad, r * cols + at);
  }
  return first_bad == std::numeric_limits<int64_t>::max() ? -1 : first_bad;
}

void quantize_finite_weight_rows(const std::string& tensor, int64_t first_row, WeightType type, DType source,
                                 const void* weights, int64_t rows, int64_t cols, uint8_t* codes, uint16_t* scales) {
  const int64_t bad = quantize_weight_rows(type, source, weights, rows, cols, codes, scales);
  if (bad >= 0)
    throw Error(tensor + " holds a NaN or an infinity at [" + std::to_string(first_row + bad / cols) + ", " +
                std::to_string(bad % cols) + "]; refusing to quantise it");
}

}  // namespace fastvlm
