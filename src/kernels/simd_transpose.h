#pragma once
// Transposes of 32-bit elements in registers, shared by the kernels that reorder operands for their products
// (int8 weight panels in qgemm.cpp; activation pairs and result tiles in quant_bf16_gemm.cpp): 16 x 16 in
// AVX-512 registers, 8 x 8 in AVX2 ones. Only for kernel variants compiled for the same level (kernels/target.h).
#include <immintrin.h>

#include "kernels/target.h"

namespace fastvlm::simd {

// Transposes the 16 x 16 matrix of 32-bit elements whose row i is m[i].
FASTVLM_TARGET_AVX512 inline __attribute__((always_inline)) void transpose_16x16_epi32(__m512i (&m)[16]) {
  // Within each 128-bit lane L, pairs then quads of rows interleave: afterwards m[4k + c] holds, in lane
  // L, element 4L + c of rows 4k .. 4k+3.
  __m512i pairs[16];
  for (int k = 0; k < 16; k += 2) {
    pairs[k] = _mm512_unpacklo_epi32(m[k], m[k + 1]);
    pairs[k + 1] = _mm512_unpackhi_epi32(m[k], m[k + 1]);
  }
  for (int k = 0; k < 16; k += 4) {
    m[k] = _mm512_unpacklo_epi64(pairs[k], pairs[k + 2]);
    m[k + 1] = _mm512_unpackhi_epi64(pairs[k], pairs[k + 2]);
    m[k + 2] = _mm512_unpacklo_epi64(pairs[k + 1], pairs[k + 3]);
    m[k + 3] = _mm512_unpackhi_epi64(pairs[k + 1], pairs[k + 3]);
  }
  // Then a 4 x 4 transpose of 128-bit lanes across m[c], m[4 + c], m[8 + c], m[12 + c].
  for (int c = 0; c < 4; ++c) {
    const __m512i low01 = _mm512_shuffle_i32x4(m[c], m[4 + c], 0x44);
    const __m512i high01 = _mm512_shuffle_i32x4(m[c], m[4 + c], 0xee);
    const __m512i low23 = _mm512_shuffle_i32x4(m[8 + c], m[12 + c], 0x44);
    const __m512i high23 = _mm512_shuffle_i32x4(m[8 + c], m[12 + c], 0xee);
    pairs[c] = _mm512_shuffle_i32x4(low01, low23, 0x88);
    pairs[4 + c] = _mm512_shuffle_i32x4(low01, low23, 0xdd);
    pairs[8 + c] = _mm512_shuffle_i32x4(high01, high23, 0x88);
    pairs[12 + c] = _mm512_shuffle_i32x4(high01, high23, 0xdd);
  }
  for (int i = 0; i < 16; ++i) m[i] = pairs[i];
}

// Transposes the 8 x 8 matrix of 32-bit elements whose row i is m[i]: pairs, then quads of rows interleave
// within each 128-bit lane, then the lanes swap.
FASTVLM_TARGET_AVX2 inline __attribute__((always_inline)) void transpose_8x8_epi32(__m256i (&m)[8]) {
  __m256i pairs[8], quads[8];
  for (int i = 0; i < 8; i += 2) {
    pairs[i] = _mm256_unpacklo_epi32(m[i], m[i + 1]);
    pairs[i + 1] = _mm256_unpackhi_epi32(m[i], m[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    quads[i] = _mm256_unpacklo_epi64(pairs[i], pairs[i + 2]);
    quads[i + 1] = _mm256_unpackhi_epi64(pairs[i], pairs[i + 2]);
    quads[i + 2] = _mm256_unpacklo_epi64(pairs[i + 1], pairs[i + 3]);
    quads[i + 3] = _mm256_unpackhi_epi64(pairs[i + 1], pairs[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    m[i] = _mm256_permute2x128_si256(quads[i], quads[i + 4], 0x20);
    m[i + 4] = _mm256_permute2x128_si256(quads[i], quads[i + 4], 0x31);
  }
}

}  // namespace fastvlm::simd
