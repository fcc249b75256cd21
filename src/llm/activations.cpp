#include "llm/activations.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/ops.h"

// GCC 12 flags the deliberately undefined upper halves inside its own AVX-512 reduction intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define FASTVLM_TARGET_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")))

namespace fastvlm {
namespace {

// e^x for 16 floats: x = n·ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact n·ln2), e^r by its
// degree-7 Taylor polynomial (truncation < 2e-8 relative), then scaled by 2^n. Inputs are clamped to
// the float range, so large negative x give 0 and large positive x a finite huge value.
FASTVLM_TARGET_AVX512 inline __m512 exp_avx512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.37f)), _mm512_set1_ps(-103.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

FASTVLM_TARGET_AVX512 void silu_multiply_avx512(float* gate, const float* up, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 sigmoid_denominator = _mm512_add_ps(one, exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), g)));
    _mm512_storeu_ps(gate + i, _mm512_mul_ps(_mm512_div_ps(g, sigmoid_denominator), _mm512_loadu_ps(up + i)));
  }
  for (; i < n; ++i) gate[i] = silu(gate[i]) * up[i];
}

FASTVLM_TARGET_AVX512 void softmax_row_avx512(float* x, int64_t n) {
  const int64_t vector_end = n / 16 * 16;
  const __mmask16 tail = __mmask16((1u << (n - vector_end)) - 1);
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 running_max = lowest;
  for (int64_t i = 0; i < vector_end; i += 16) running_max = _mm512_max_ps(running_max, _mm512_loadu_ps(x + i));
  if (tail) running_max = _mm512_max_ps(running_max, _mm512_mask_loadu_ps(lowest, tail, x + vector_end));
  const __m512 largest = _mm512_set1_ps(_mm512_reduce_max_ps(running_max));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < vector_end; i += 16) {
    const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), largest));
    _mm512_storeu_ps(x + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (tail) {
    const __m512 e = _mm512_maskz_mov_ps(tail, exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + vector_end), largest)));
    _mm512_mask_storeu_ps(x + vector_end, tail, e);
    sum = _mm512_add_ps(sum, e);
  }
  const __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
  for (int64_t i = 0; i < vector_end; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inverse));
  if (tail) _mm512_mask_storeu_ps(x + vector_end, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + vector_end), inverse));
}

}  // namespace

void silu_multiply(float* gate, const float* up, int64_t n, Isa isa) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t begin = chunk * kChunk;
    const int64_t length = std::min(kChunk, n - begin);
    if (isa >= Isa::Avx512) {
      silu_multiply_avx512(gate + begin, up + begin, length);
    } else {
      for (int64_t i = begin; i < begin + length; ++i) gate[i] = silu(gate[i]) * up[i];
    }
  }
}

void softmax_row(float* x, int64_t n, Isa isa) {
  if (isa >= Isa::Avx512) {
    softmax_row_avx512(x, n);
  } else {
    softmax_rows(x, 1, n);
  }
}

}  // namespace fastvlm
