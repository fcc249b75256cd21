#include "kernels/dequantize.h"

#include <immintrin.h>

#include "core/dtype.h"
#include "kernels/dispatch.h"
#include "kernels/target.h"

// GCC 12 flags the deliberately undefined upper halves inside its own AVX-512 reduction intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastvlm {
namespace {

template <typename Store>
void dequantize_row_scalar(const QuantMatrix& m, int64_t row, Store store) {
  const RowCodes codes = m.row(row);
  const uint16_t* scales = m.row_scales(row);
  const int64_t group_bytes = quant_row_bytes(m.type, kQuantGroupSize);
  for (int64_t g = 0; g < m.groups_per_row(); ++g) {
    const float d = f16_to_f32(scales[g]);
    for (int j = 0; j < kQuantGroupSize; ++j)
      store(g * kQuantGroupSize + j, d * float(quant_code(m.type, codes.at(g * group_bytes), j)));
  }
}

// 32 weights of one group as two vectors of 16 int32 (weights 0-15, 16-31).
FASTVLM_TARGET_AVX512 inline void load_group_avx512(WeightType type, const uint8_t* codes, __m512i& low, __m512i& high) {
  if (type == WeightType::Q8_0) {
    low = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
    high = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16)));
    return;
  }
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
  const __m128i nibble = _mm_set1_epi8(0x0f);
  const __m512i eight = _mm512_set1_epi32(8);
  low = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(packed, nibble)), eight);
  high = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(packed, 4), nibble)), eight);
}

// Group g of the row goes to out + g · group_stride: rows of cols values (stride 32), or tiles of 16 rows
// (stride 512, dequantize_rows_bf16_tiles).
template <WeightType type>
FASTVLM_TARGET_AVX512 void dequantize_row_bf16_avx512(const QuantMatrix& m, int64_t row, uint16_t* out,
                                                      int64_t group_stride) {
  // Locals, not m's fields: the vector stores may alias anything, which would reload those per group.
  const RowCodes codes = m.row(row);
  const uint16_t* scales = m.row_scales(row);
  const int64_t group_bytes = quant_row_bytes(type, kQuantGroupSize), groups = m.groups_per_row();
  for (int64_t g = 0; g < groups; ++g) {
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(scales[g]));
    if constexpr (type == WeightType::Q4_0) {
      // 16 possible codes: their 16 bfloat16 values (code - 8) · d, computed once, are looked up per
      // weight by its nibble (one VPERMW for the group instead of widening and scaling 32 weights).
      const __m256i values = (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(
          _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7), d));
      const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes.at(g * group_bytes)));
      const __m128i nibble = _mm_set1_epi8(0x0f);
      // Weights 0-15 are the low nibbles, 16-31 the high ones.
      const __m256i indices = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(packed, nibble)),
                                                      _mm_and_si128(_mm_srli_epi16(packed, 4), nibble), 1);
      _mm512_storeu_si512(out + g * group_stride,
                          _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(indices), _mm512_castsi256_si512(values)));
      continue;
    }
    __m512i low, high;
    load_group_avx512(type, codes.at(g * group_bytes), low, high);
    const __m512 low_f = _mm512_mul_ps(_mm512_cvtepi32_ps(low), d);
    const __m512 high_f = _mm512_mul_ps(_mm512_cvtepi32_ps(high), d);
    _mm512_storeu_si512(out + g * group_stride, (__m512i)_mm512_cvtne2ps_pbh(high_f, low_f));
  }
}

FASTVLM_TARGET_AVX512 void dequantize_row_bf16_avx512(const QuantMatrix& m, int64_t row, uint16_t* out,
                                                      int64_t group_stride) {
  (m.type == WeightType::Q8_0 ? dequantize_row_bf16_avx512<WeightType::Q8_0>
                              : dequantize_row_bf16_avx512<WeightType::Q4_0>)(m, row, out, group_stride);
}

void dequantize_row_bf16_scalar(const QuantMatrix& m, int64_t row, uint16_t* out, int64_t group_stride) {
  dequantize_row_scalar(m, row, [out, group_stride](int64_t c, float v) {
    out[c / kQuantGroupSize * group_stride + c % kQuantGroupSize] = f32_to_bf16(v);
  });
}

struct DequantizeOps {
  void (*bf16_row)(const QuantMatrix&, int64_t, uint16_t*, int64_t);
};

const DequantizeOps& ops() {
  static const DequantizeOps chosen = kernels::choose<DequantizeOps>({
      .scalar = {dequantize_row_bf16_scalar},
      .avx2 = {dequantize_row_bf16_scalar},
      .avx512 = {dequantize_row_bf16_avx512},
  });
  return chosen;
}

}  // namespace

void dequantize_rows_f32(const QuantMatrix& m, int64_t row_begin, int64_t row_count, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < row_count; ++r) {
    float* out_row = out + r * m.cols;
    dequantize_row_scalar(m, row_begin + r, [out_row](int64_t c, float v) { out_row[c] = v; });
  }
}

void dequantize_rows_bf16(const QuantMatrix& m, int64_t row_begin, int64_t row_count, uint16_t* out) {
  const auto bf16_row = ops().bf16_row;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < row_count; ++r) bf16_row(m, row_begin + r, out + r * m.cols, kQuantGroupSize);
}

void dequantize_rows_bf16_tiles(const QuantMatrix& m, int64_t row_begin, int64_t row_count, uint16_t* out) {
  const auto bf16_row = ops().bf16_row;
  constexpr int64_t kTile = kBf16TileRows * kQuantGroupSize;
  for (int64_t r = 0; r < row_count; ++r)
    bf16_row(m, row_begin + r, out + (r / kBf16TileRows * m.groups_per_row() * kTile + r % kBf16TileRows * kQuantGroupSize),
             kTile);
}

}  // namespace fastvlm
