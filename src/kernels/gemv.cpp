#include "kernels/gemv.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "core/aligned_vector.h"
#include "core/dtype.h"
#include "core/error.h"
#include "kernels/amx_tiles.h"
#include "kernels/dispatch.h"
#include "kernels/quant_simd.h"
#include "kernels/row_count.h"
#include "kernels/simd_mask.h"
#include "kernels/target.h"

// GCC 12 flags the deliberately undefined upper halves inside its own AVX-512 reduction intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastvlm {
namespace {

// Runs body(begin, end) on contiguous slices of [0, rows), one per OpenMP thread, cut at whole blocks of
// kQuantRowBlock rows (so that a quantised matrix's blocks stay whole in one thread). Small matrices stay on
// the calling thread: waking the team costs more than they do, and far more when the cores are busy.
template <typename Body>
void for_row_slices(int64_t rows, int64_t cols, Body&& body) {
  constexpr int64_t kMinWeightsToSplit = 1 << 16;
#pragma omp parallel if (rows * cols >= kMinWeightsToSplit)
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t thread = omp_get_thread_num();
    const int64_t blocks = (rows + kQuantRowBlock - 1) / kQuantRowBlock;
    const int64_t begin = std::min(rows, blocks * thread / threads * kQuantRowBlock);
    const int64_t end = std::min(rows, blocks * (thread + 1) / threads * kQuantRowBlock);
    if (begin < end) body(begin, end);
  }
}

// The same over the rows of several matrices of one width taken as one range, in one parallel region:
// body(i, begin, end) for the rows [begin, end) of matrix i within a thread's slice.
template <typename Body>
void for_row_slices(std::span<const QuantMatrix* const> matrices, Body&& body) {
  int64_t total = 0;
  for (const QuantMatrix* m : matrices) total += m->rows;
  for_row_slices(total, matrices[0]->cols, [&](int64_t begin, int64_t end) {
    int64_t first = 0;
    for (size_t i = 0; i < matrices.size(); ++i) {
      const int64_t low = std::max(begin, first), high = std::min(end, first + matrices[i]->rows);
      if (low < high) body(i, low - first, high - first);
      first += matrices[i]->rows;
    }
  });
}

using kernels::with_row_count;

// Runs row_kernel.template operator()<R>(r, first) for every weight row r of [begin, end) and the
// activation rows [first, first + R) in chunks of at most MaxChunk: a weight row is read from memory once
// and stays in L1 for the later chunks.
template <int MaxChunk, typename RowKernel>
[[gnu::always_inline]] inline void for_row_chunks(int64_t begin, int64_t end, int64_t x_rows, RowKernel&& row_kernel) {
  for (int64_t r = begin; r < end; ++r) {
    for (int64_t first = 0; first < x_rows; first += MaxChunk) {
      with_row_count<MaxChunk>(std::min<int64_t>(MaxChunk, x_rows - first),
                               [&]<int R>() { row_kernel.template operator()<R>(r, first); });
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Activation quantisation shared by every gemv_quant path: per 32-group, scale = max|x| / 127 and
// code = round_to_nearest_even(x · 127 / max|x|).
struct QuantizedActivation {
  std::vector<int8_t> codes;   // [groups * 32], natural order
  std::vector<float> scales;   // [groups]
  std::vector<int32_t> sums;   // [groups]: Σ codes of the group, for the unsigned-code corrections
};

void quantize_group_scalar(const float* x, int8_t* codes, float& scale, int32_t& sum) {
  float largest = 0;
  for (int i = 0; i < kQuantGroupSize; ++i) largest = std::max(largest, std::fabs(x[i]));
  scale = largest / 127.0f;
  const float inverse = largest == 0 ? 0.0f : 127.0f / largest;
  sum = 0;
  for (int i = 0; i < kQuantGroupSize; ++i) {
    codes[i] = int8_t(std::nearbyint(x[i] * inverse));
    sum += codes[i];
  }
}

// Quantises x group by group with `quantize_group`(group floats, codes, &scale, &sum), inlined into each
// level's caller.
template <typename QuantizeGroup>
[[gnu::always_inline]] inline void quantize_activation(const float* x, int64_t cols, QuantizedActivation& q,
                                                       QuantizeGroup quantize_group) {
  const int64_t groups = cols / kQuantGroupSize;
  q.codes.resize(size_t(cols));
  q.scales.resize(size_t(groups));
  q.sums.resize(size_t(groups));
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t offset = g * kQuantGroupSize;
    quantize_group(x + offset, q.codes.data() + offset, q.scales[g], q.sums[g]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Scalar paths.

// Every slice kernel below computes y[i * rows + r] = W[r, :] · x_i for the weight rows r of [begin, end)
// and all x_rows activation rows x_i, reading each weight row once from memory; activation row i's
// arithmetic is the same whatever x_rows is, so a row's result does not depend on its batch.

void gemv_bf16_slice_scalar(const uint16_t* w, int64_t rows, int64_t cols, const float* x, int64_t x_rows,
                            int64_t begin, int64_t end, float* y) {
  for (int64_t r = begin; r < end; ++r) {
    const uint16_t* row = w + r * cols;
    for (int64_t i = 0; i < x_rows; ++i) {
      const float* x_row = x + i * cols;
      float sum = 0;
      for (int64_t c = 0; c < cols; ++c) sum += bf16_to_f32(row[c]) * x_row[c];
      y[i * rows + r] = sum;
    }
  }
}

void gemv_quant_slice_scalar(const QuantMatrix& m, const QuantizedActivation* q, int64_t x_rows, int64_t begin,
                             int64_t end, float* y) {
  const int64_t group_bytes = quant_row_bytes(m.type, kQuantGroupSize);
  for (int64_t r = begin; r < end; ++r) {
    const RowCodes codes = m.row(r);
    const uint16_t* scales = m.row_scales(r);
    for (int64_t i = 0; i < x_rows; ++i) {
      float sum = 0;
      for (int64_t g = 0; g < m.groups_per_row(); ++g) {
        int32_t dot = 0;
        for (int j = 0; j < kQuantGroupSize; ++j)
          dot += quant_code(m.type, codes.at(g * group_bytes), j) * q[i].codes[g * kQuantGroupSize + j];
        sum += f16_to_f32(scales[g]) * q[i].scales[g] * float(dot);
      }
      y[i * m.rows + r] = sum;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// AVX2 paths: 8 floats / 32 int8 per register, one quantisation group per step.

// The lanes of v summed as ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)).
FASTVLM_TARGET_AVX2 inline float reduce_add_avx2(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

// reduce_add_avx2 of 8 registers at once, lane j of the result that of v[j], summed in the same order (so
// bit-identical): 23 shuffles and adds for the 8 instead of 6 dependent ones each plus a scalar store.
FASTVLM_TARGET_AVX2 inline __m256 reduce_add8_avx2(const __m256 (&v)[8]) {
  // s[j] = [v[j] low half + high half | the same of v[j + 4]]: lanes a b c d = v0+v4, v1+v5, v2+v6, v3+v7.
  __m256 s[4];
  for (int j = 0; j < 4; ++j)
    s[j] = _mm256_add_ps(_mm256_insertf128_ps(v[j], _mm256_castps256_ps128(v[j + 4]), 1),
                         _mm256_permute2f128_ps(v[j], v[j + 4], 0x31));
  // A 4 x 4 transpose in each half: a, b, c, d of the four rows side by side.
  const __m256 ab01 = _mm256_unpacklo_ps(s[0], s[1]), cd01 = _mm256_unpackhi_ps(s[0], s[1]);
  const __m256 ab23 = _mm256_unpacklo_ps(s[2], s[3]), cd23 = _mm256_unpackhi_ps(s[2], s[3]);
  const __m256 a = _mm256_shuffle_ps(ab01, ab23, 0x44), b = _mm256_shuffle_ps(ab01, ab23, 0xee);
  const __m256 c = _mm256_shuffle_ps(cd01, cd23, 0x44), d = _mm256_shuffle_ps(cd01, cd23, 0xee);
  return _mm256_add_ps(_mm256_add_ps(a, c), _mm256_add_ps(b, d));
}

FASTVLM_TARGET_AVX2 inline __m256 load_bf16x8_avx2(const uint16_t* p) {
  const __m256i widened = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(widened, 16));
}

// AVX2 keeps two accumulators per activation row in the 16 registers: at most 4 rows at a time.
constexpr int kMaxChunkAvx2 = 4;

// Weight row r against activation rows [first, first + R).
template <int R>
FASTVLM_TARGET_AVX2 inline void bf16_row_avx2(const uint16_t* w, int64_t rows, int64_t cols, const float* x, int64_t r,
                                              int64_t first, float* y) {
  const int64_t vector_cols = cols & ~int64_t(15);
  const uint16_t* row = w + r * cols;
  const float* xs = x + first * cols;
  __m256 acc0[R], acc1[R];
  for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
  for (int64_t c = 0; c < vector_cols; c += 16) {
    const __m256 w0 = load_bf16x8_avx2(row + c), w1 = load_bf16x8_avx2(row + c + 8);
    for (int i = 0; i < R; ++i) {
      acc0[i] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs + i * cols + c), acc0[i]);
      acc1[i] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs + i * cols + c + 8), acc1[i]);
    }
  }
  for (int i = 0; i < R; ++i) {
    float sum = reduce_add_avx2(_mm256_add_ps(acc0[i], acc1[i]));
    for (int64_t c = vector_cols; c < cols; ++c) sum += bf16_to_f32(row[c]) * xs[i * cols + c];
    y[(first + i) * rows + r] = sum;
  }
}

FASTVLM_TARGET_AVX2 void gemv_bf16_slice_avx2(const uint16_t* w, int64_t rows, int64_t cols, const float* x,
                                              int64_t x_rows, int64_t begin, int64_t end, float* y) {
  for_row_chunks<kMaxChunkAvx2>(begin, end, x_rows, [&]<int R>(int64_t r, int64_t first) {
    bf16_row_avx2<R>(w, rows, cols, x, r, first, y);
  });
}

// The block-quantised product takes 32 weight bytes per step: one Q8_0 group, or two Q4_0 groups (their 32
// packed bytes give one operand of low nibbles, weights 0-15 of each group, and one of high nibbles, weights
// 16-31). VPMADDUBSW multiplies unsigned by signed bytes in saturating pairs: Q8_0 goes through the sign
// trick |x| · (w · sign x) (pairs within 2 · 127 · 127); Q4_0 codes are used as stored (q + 8, 0..15), the
// +8 corrected with the group's activation sum. VPMADDWD then leaves 8 int32 partial sums per step:
//   Q8_0: all 8 lanes the step's group;  Q4_0: lanes 0-3 its first group, lanes 4-7 its second
// (the activation codes are put once per call into that byte order). They are converted to float and
// multiplied by the matching d_w · d_x, which are computed for 8 groups at a time in one register, each
// step permuting its lanes out of it (rather than converting and broadcasting a scalar per group).
template <WeightType Type>
constexpr int kStepGroupsAvx2 = Type == WeightType::Q8_0 ? 1 : 2;
constexpr int kStepBytesAvx2 = 32;
// Activation code bytes per step: one operand per VPMADDUBSW.
template <WeightType Type>
constexpr int kStepCodesAvx2 = kStepGroupsAvx2<Type> * kQuantGroupSize;
// Groups whose scale products one register holds.
constexpr int kSpanGroupsAvx2 = 8;

// Activations are zero-padded to whole spans, so that a row's last span can be taken whole (see quant_row_avx2).
struct PreparedActivationAvx2 {
  AlignedVector<int8_t> codes;   // [padded steps * kStepCodesAvx2] in the step byte order above
  AlignedVector<float> offsets;  // Q4_0 [padded groups] -8·Σx per group: the stored codes' +8, taken once per span
  AlignedVector<float> scales;   // [padded groups] d_x per group
};

// Groups rounded up to whole spans.
inline int64_t padded_groups_avx2(int64_t groups) {
  return (groups + kSpanGroupsAvx2 - 1) / kSpanGroupsAvx2 * kSpanGroupsAvx2;
}

template <WeightType Type>
void prepare_activation_avx2(const QuantizedActivation& q, int64_t groups, PreparedActivationAvx2& p) {
  constexpr int half = kQuantGroupSize / 2;
  const int64_t padded_groups = padded_groups_avx2(groups), padded_steps = padded_groups / kStepGroupsAvx2<Type>;
  p.scales.assign(size_t(padded_groups), 0.0f);
  std::copy(q.scales.begin(), q.scales.begin() + groups, p.scales.begin());
  p.codes.assign(size_t(padded_steps * kStepCodesAvx2<Type>), 0);
  if constexpr (Type == WeightType::Q8_0) {
    std::copy(q.codes.begin(), q.codes.begin() + groups * kQuantGroupSize, p.codes.begin());
  } else {
    p.offsets.assign(size_t(padded_groups), 0.0f);
    for (int64_t g = 0; g < groups; ++g) {
      const int k = int(g % 2);
      const int8_t* natural = q.codes.data() + g * kQuantGroupSize;
      int8_t* step = p.codes.data() + g / 2 * kStepCodesAvx2<Type>;
      std::memcpy(step + k * half, natural, half);
      std::memcpy(step + kStepBytesAvx2 + k * half, natural + half, half);
      p.offsets[size_t(g)] = float(-8 * q.sums[size_t(g)]);
    }
  }
}

// The int32 partial sums of one step (Q4_0: of the codes as stored, q + 8): the first `bytes` of a weight
// row's step at `codes` (32, or 16 for a lone last Q4_0 group, loaded apart so that nothing past the row is
// read) against the activation step at `x` (Q8_0: its codes and their magnitudes, in registers).
template <WeightType Type>
FASTVLM_TARGET_AVX2 inline __m256i step_dot_avx2(const uint8_t* codes, int64_t bytes, const int8_t* x, __m256i x_codes,
                                                 __m256i x_magnitude) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (Type == WeightType::Q8_0) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(x_magnitude, _mm256_sign_epi8(w, x_codes)), ones);
  } else {
    const __m256i packed =
        bytes == kStepBytesAvx2 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes))
                                : _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
    const __m256i nibble = _mm256_set1_epi8(0x0f);
    const __m256i low = _mm256_and_si256(packed, nibble), high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
    // Each pair is within 2 · 15 · 127, so the low and high halves' pairs add in 16 bits.
    const __m256i pairs =
        _mm256_add_epi16(_mm256_maddubs_epi16(low, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))),
                         _mm256_maddubs_epi16(high, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + kStepBytesAvx2))));
    return _mm256_madd_epi16(pairs, ones);
  }
}

// d_w · d_x of the 8 groups from `first_group` of one weight row (zero past the row's last group). Where
// `may_read_past_row`, a partial span's 8 halves are loaded whole (the next row's are masked off).
FASTVLM_TARGET_AVX2 inline __m256 span_scales_avx2(const uint16_t* w_scales, int64_t groups, int64_t first_group,
                                                   const float* x_scales, bool may_read_past_row) {
  const int64_t left = groups - first_group;
  __m128i halves;
  if (left >= kSpanGroupsAvx2 || may_read_past_row) {
    halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w_scales + first_group));
  } else {
    // Assembled in general registers: a vector load of a copy just stored piecewise would stall on the
    // store forwarding (measured: ~15% of a 28-group row's time).
    uint64_t quads[2] = {0, 0};
    for (int64_t g = 0; g < left; ++g) quads[g / 4] |= uint64_t(w_scales[first_group + g]) << (16 * (g % 4));
    halves = _mm_set_epi64x(int64_t(quads[1]), int64_t(quads[0]));
  }
  const __m256 products = _mm256_mul_ps(_mm256_cvtph_ps(halves), _mm256_loadu_ps(x_scales + first_group));
  // Past the row: zero where assembled, masked off where loaded whole.
  if (left >= kSpanGroupsAvx2) return products;
  return _mm256_and_ps(_mm256_castsi256_ps(simd::first_lanes_avx2(left)), products);
}

// How far ahead of the step its weight row is prefetched. A row is read as one sequential stream (measured
// on Zen 3, one thread, from DRAM: passes over 2 or 4 rows side by side, as the AVX-512 kernel takes, were
// slower than one row at a time, 10-40% by shape), yet the prefetch still gained ~10% on Q8_0 there.
constexpr int64_t kPrefetchBytesAvx2 = 4096;

// One step of quant_row_avx2 below, whose weight bytes are at `codes`: acc[i] += float(dot of the step) ·
// the lanes of scales[i] that lane_index picks. `bytes` < 32 only for a lone last Q4_0 group, outside the
// main loop.
template <WeightType Type, int R>
FASTVLM_TARGET_AVX2 inline __attribute__((always_inline)) void accumulate_step_avx2(
    __m256 (&acc)[R], const uint8_t* codes, const PreparedActivationAvx2* p, int64_t step, int64_t bytes,
    __m256i lane_index, const __m256 (&scales)[R]) {
  for (int i = 0; i < R; ++i) {
    const int8_t* x = p[i].codes.data() + step * kStepCodesAvx2<Type>;
    __m256i x_codes = _mm256_setzero_si256(), x_magnitude = _mm256_setzero_si256();
    if constexpr (Type == WeightType::Q8_0) {
      x_codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
      x_magnitude = _mm256_abs_epi8(x_codes);
    }
    const __m256i dot = step_dot_avx2<Type>(codes, bytes, x, x_codes, x_magnitude);
    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_permutevar8x32_ps(scales[i], lane_index), acc[i]);
  }
}

// What quant_row_avx2 needs of a matrix's rows, worked out once per call.
struct QuantRowsAvx2 {
  int64_t groups, steps, full_steps;  // per row; full_steps leaves out a lone last Q4_0 group
  int64_t row_bytes;
  // Rows before this one may take their last span whole: the codes and scales read past the row's end
  // still lie inside the matrix (its following rows), and count for nothing (zero activations, masked scales).
  // None where the rows are stored in blocks: there the bytes after a row's end are not the next row's.
  int64_t whole_last_span_rows;

  template <WeightType Type>
  static QuantRowsAvx2 of(const QuantMatrix& m) {
    QuantRowsAvx2 rows;
    rows.groups = m.groups_per_row();
    rows.steps = (rows.groups + kStepGroupsAvx2<Type> - 1) / kStepGroupsAvx2<Type>;
    rows.full_steps = rows.groups / kStepGroupsAvx2<Type>;
    rows.row_bytes = quant_row_bytes(Type, m.cols);
    const int64_t padded_groups = padded_groups_avx2(rows.groups);
    const int64_t code_overrun = padded_groups / kStepGroupsAvx2<Type> * kStepBytesAvx2 - rows.row_bytes;
    const int64_t scale_overrun = padded_groups - rows.groups;
    const int64_t rows_after = std::max((code_overrun + rows.row_bytes - 1) / rows.row_bytes,
                                        (scale_overrun + rows.groups - 1) / rows.groups);
    rows.whole_last_span_rows = m.row_block == 1 ? std::max<int64_t>(0, m.rows - rows_after) : 0;
    return rows;
  }
};

// Q4_0's correction for its stored codes' +8, once per span: acc += (d_w · d_x) · (-8·Σx) for the span's groups.
template <WeightType Type, int R>
FASTVLM_TARGET_AVX2 inline void add_span_offsets_avx2(__m256 (&acc)[R], const __m256 (&scales)[R],
                                                      const PreparedActivationAvx2* p, int64_t first_group) {
  if constexpr (Type == WeightType::Q4_0)
    for (int i = 0; i < R; ++i)
      acc[i] = _mm256_fmadd_ps(scales[i], _mm256_loadu_ps(p[i].offsets.data() + first_group), acc[i]);
}

// Weight row r against the R activation rows at p, each weight step loaded once for the R rows: the row's 8
// lane sums per activation row. Per lane: acc += float(dot) · (d_w · d_x) over the even steps in
// order and over the odd ones in a second accumulator, then their sum: the same arithmetic for any R, so a
// result does not depend on its batch, nor on whether the row's last span was taken whole (its steps past
// the row add exact zeros).
template <WeightType Type, int R>
FASTVLM_TARGET_AVX2 inline __attribute__((always_inline)) void quant_row_avx2(const QuantMatrix& m,
                                                                              const QuantRowsAvx2& rows,
                                                                              const PreparedActivationAvx2* p,
                                                                              int64_t r, __m256 (&lane_sums)[R]) {
  constexpr int step_groups = kStepGroupsAvx2<Type>;
  constexpr int64_t span_steps = kSpanGroupsAvx2 / step_groups;
  const int64_t groups = rows.groups, steps = rows.steps, full_steps = rows.full_steps;
  const RowCodes codes = m.row(r);
  const uint16_t* w_scales = m.scales + r * groups;
  // The step's group of each lane within its span: Q8_0 (0, ..., 0), Q4_0 (0, 0, 0, 0, 1, 1, 1, 1).
  const __m256i first_lanes = Type == WeightType::Q8_0 ? _mm256_setzero_si256() : _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  const __m256i next_lanes = _mm256_set1_epi32(step_groups);
  // The even and the odd steps in separate accumulators, which halves the chain of dependent FMAs.
  __m256 acc[R], odd_acc[R];
  for (int i = 0; i < R; ++i) acc[i] = odd_acc[i] = _mm256_setzero_ps();
  // Spans with their steps unrolled, each step's lanes a constant: every whole span, and the last one too
  // where it may be read whole (all but the matrix's last rows), rather than step by step below.
  const bool whole_last_span = r < rows.whole_last_span_rows;
  const int64_t unrolled_steps = whole_last_span ? steps : full_steps / span_steps * span_steps;
  int64_t span = 0;
  for (; span < unrolled_steps; span += span_steps) {
    __m256 scales[R];
    for (int i = 0; i < R; ++i)
      scales[i] = span_scales_avx2(w_scales, groups, step_groups * span, p[i].scales.data(), whole_last_span);
    add_span_offsets_avx2<Type, R>(acc, scales, p, step_groups * span);
#pragma GCC unroll 8
    for (int k = 0; k < span_steps; k += 2) {
      // A pair of steps is one 64-byte chunk of the row (spans start at even steps); past the row's end
      // (a whole last span, plain layout only) the next row's chunk.
      const int64_t step = span + k;
      const uint8_t* chunk = codes.first + step / 2 * codes.chunk_stride;
      _mm_prefetch(reinterpret_cast<const char*>(chunk + kPrefetchBytesAvx2), _MM_HINT_T0);
      accumulate_step_avx2<Type, R>(acc, chunk, p, step, kStepBytesAvx2,
                                    _mm256_add_epi32(first_lanes, _mm256_set1_epi32(k * step_groups)), scales);
      accumulate_step_avx2<Type, R>(odd_acc, chunk + kStepBytesAvx2, p, step + 1, kStepBytesAvx2,
                                    _mm256_add_epi32(first_lanes, _mm256_set1_epi32((k + 1) * step_groups)), scales);
    }
  }
  // The last partial span of the matrix's last rows, step by step.
  for (; span < steps; span += span_steps) {
    __m256 scales[R];
    for (int i = 0; i < R; ++i)
      scales[i] = span_scales_avx2(w_scales, groups, step_groups * span, p[i].scales.data(), false);
    add_span_offsets_avx2<Type, R>(acc, scales, p, step_groups * span);
    __m256i lane_index = first_lanes;
    const int64_t span_end = std::min(full_steps, span + span_steps);
    int64_t step = span;
    for (; step + 1 < span_end; step += 2) {
      const uint8_t* chunk = codes.at(step * kStepBytesAvx2);
      _mm_prefetch(reinterpret_cast<const char*>(chunk + kPrefetchBytesAvx2), _MM_HINT_T0);
      accumulate_step_avx2<Type, R>(acc, chunk, p, step, kStepBytesAvx2, lane_index, scales);
      lane_index = _mm256_add_epi32(lane_index, next_lanes);
      accumulate_step_avx2<Type, R>(odd_acc, chunk + kStepBytesAvx2, p, step + 1, kStepBytesAvx2, lane_index, scales);
      lane_index = _mm256_add_epi32(lane_index, next_lanes);
    }
    // Spans start at even steps, so a whole step left over is even; a lone last Q4_0 group's step goes to
    // the accumulator of its parity.
    if (step < span_end) {
      accumulate_step_avx2<Type, R>(acc, codes.at(step * kStepBytesAvx2), p, step, kStepBytesAvx2, lane_index, scales);
      lane_index = _mm256_add_epi32(lane_index, next_lanes);
      ++step;
    }
    if (step < std::min(steps, span + span_steps)) {
      const uint8_t* last = codes.at(step * kStepBytesAvx2);
      if (step % 2 == 0)
        accumulate_step_avx2<Type, R>(acc, last, p, step, kStepBytesAvx2 / 2, lane_index, scales);
      else
        accumulate_step_avx2<Type, R>(odd_acc, last, p, step, kStepBytesAvx2 / 2, lane_index, scales);
    }
  }
  for (int i = 0; i < R; ++i) lane_sums[i] = _mm256_add_ps(acc[i], odd_acc[i]);
}

// Rows per quant_rows_avx2 call: one register of results per activation row.
constexpr int kRowBlockAvx2 = 8;

// Weight rows [begin, begin + count), count <= 8, against activation rows [first, first + R). The rows'
// lane sums are reduced together (reduce_add8_avx2) and the call's set-up is shared: with the 14-28 steps of
// a 896-wide row, a reduction and a call per row took ~20% of the time.
template <WeightType Type, int R>
FASTVLM_TARGET_AVX2 void quant_rows_avx2(const QuantMatrix& m, const QuantRowsAvx2& rows,
                                         const PreparedActivationAvx2* p, int64_t begin, int count, int64_t first,
                                         float* y) {
  __m256 lane_sums[R][kRowBlockAvx2];
  for (int j = 0; j < kRowBlockAvx2; ++j) {
    __m256 row_sums[R];
    if (j < count)
      quant_row_avx2<Type, R>(m, rows, p + first, begin + j, row_sums);
    else
      for (int i = 0; i < R; ++i) row_sums[i] = _mm256_setzero_ps();
    for (int i = 0; i < R; ++i) lane_sums[i][j] = row_sums[i];
  }
  for (int i = 0; i < R; ++i) {
    float* out = y + (first + i) * m.rows + begin;
    const __m256 sums = reduce_add8_avx2(lane_sums[i]);
    if (count == kRowBlockAvx2) {
      _mm256_storeu_ps(out, sums);
    } else {
      alignas(32) float staged[kRowBlockAvx2];
      _mm256_store_ps(staged, sums);
      std::copy(staged, staged + count, out);
    }
  }
}

template <WeightType Type>
FASTVLM_TARGET_AVX2 void gemv_quant_slice_avx2(const QuantMatrix& m, const PreparedActivationAvx2* p, int64_t x_rows,
                                               int64_t begin, int64_t end, float* y) {
  const QuantRowsAvx2 rows = QuantRowsAvx2::of<Type>(m);
  // A block's weight rows (8 x ~0.5-1 KB at 896 columns) stay in L1 for the later activation chunks.
  for (int64_t block = begin; block < end; block += kRowBlockAvx2) {
    const int count = int(std::min<int64_t>(kRowBlockAvx2, end - block));
    for (int64_t first = 0; first < x_rows; first += kMaxChunkAvx2)
      with_row_count<kMaxChunkAvx2>(std::min<int64_t>(kMaxChunkAvx2, x_rows - first), [&]<int R>() {
        quant_rows_avx2<Type, R>(m, rows, p, block, count, first, y);
      });
  }
}

// ---------------------------------------------------------------------------------------------------------
// AVX-512 paths. The quantised kernel takes 64 weight bytes per step (Q8_0: two groups, Q4_0: four) with
// VPDPBUSD, which multiplies unsigned by signed bytes: weight codes are made unsigned (Q8_0: w + 128 by
// flipping the sign bit; Q4_0: the stored q + 8) and the offset times the group's activation sum is
// subtracted through the accumulator's initial value. The 16 int32 lanes then hold partial sums of the
// step's groups, scaled by a vector of the matching d_w · d_x before the float accumulation.
//
// Lane layout of a step (dword lane i covers bytes 4i..4i+3 of a 64-byte operand):
//   Q8_0: the two groups' codes in order                 -> lanes 0-7 group 0, lanes 8-15 group 1
//   Q4_0: the 64 packed bytes (16 per group) give one operand of their low nibbles (weights 0-15 of each
//         group) and one of their high nibbles (weights 16-31), both multiplied into the same lanes
//                                                        -> lanes 4k..4k+3 group k
// Q4_0's four groups per step take two VPDPBUSD but one conversion, scaling and float accumulation, and its
// unpacking is one AND and one shift-and-AND per 128 weights. The activation codes are put once per call
// into the steps' byte order.

template <WeightType Type>
constexpr int kStepGroups = Type == WeightType::Q8_0 ? 2 : 4;
// Activation code bytes per step: one operand per VPDPBUSD.
template <WeightType Type>
constexpr int kStepCodes = kStepGroups<Type> * kQuantGroupSize;

struct PreparedActivationAvx512 {
  AlignedVector<int8_t> codes;     // [steps * kStepCodes] in the weight layout's byte order, zero-padded
  AlignedVector<int32_t> offsets;  // [steps * 16] initial accumulator: -(code offset)·Σx per group
  AlignedVector<float> scales;     // [groups rounded up to 16] d_x per group in natural order, zero-padded
};

constexpr int kLanes = 16;

// Which of its step's groups lane i belongs to.
inline int lane_group(WeightType type, int lane) { return type == WeightType::Q8_0 ? lane / 8 : lane / 4; }

// Per step, the codes of its groups in the lane layout above (a last partial step's missing groups zero)
// and each group's offset in its first lane.
template <WeightType Type>
void prepare_activation_avx512(const QuantizedActivation& q, int64_t groups, PreparedActivationAvx512& p) {
  constexpr int step_groups = kStepGroups<Type>, half = kQuantGroupSize / 2;
  const int64_t steps = (groups + step_groups - 1) / step_groups;
  const int32_t code_offset = Type == WeightType::Q8_0 ? 128 : 8;
  p.codes.assign(size_t(steps * kStepCodes<Type>), 0);
  p.offsets.assign(size_t(steps * kLanes), 0);
  p.scales.assign(size_t((groups + kLanes - 1) / kLanes * kLanes), 0.0f);
  std::copy(q.scales.begin(), q.scales.begin() + groups, p.scales.begin());
  for (int64_t g = 0; g < groups; ++g) {
    const int k = int(g % step_groups);
    const int8_t* natural = q.codes.data() + g * kQuantGroupSize;
    int8_t* step = p.codes.data() + g / step_groups * kStepCodes<Type>;
    if constexpr (Type == WeightType::Q8_0) {
      std::memcpy(step + k * kQuantGroupSize, natural, kQuantGroupSize);
    } else {
      std::memcpy(step + k * half, natural, half);
      std::memcpy(step + 64 + k * half, natural + half, half);
    }
    p.offsets[size_t(g / step_groups * kLanes + k * (kLanes / step_groups))] = -code_offset * q.sums[size_t(g)];
  }
}

// acc + the offset-corrected dot products of one step's 64 weight bytes (the first `bytes` of them; only a
// last partial step loads fewer, outside the main loop: on some CPUs (AMD Zen) a byte-masked load from
// memory stalls the stream) with the activation codes `x`.
template <WeightType Type>
FASTVLM_TARGET_AVX512 inline __m512i step_dot(const uint8_t* codes, int64_t bytes, __m512i acc, const int8_t* x) {
  const __m512i packed = bytes == 64 ? _mm512_loadu_si512(codes) : _mm512_maskz_loadu_epi8((__mmask64(1) << bytes) - 1, codes);
  if constexpr (Type == WeightType::Q8_0) {
    return _mm512_dpbusd_epi32(acc, _mm512_xor_si512(packed, _mm512_set1_epi8(char(0x80))), _mm512_loadu_si512(x));
  } else {
    const __m512i nibble = _mm512_set1_epi8(0x0f);
    const __m512i low = _mm512_and_si512(packed, nibble), high = _mm512_and_si512(_mm512_srli_epi16(packed, 4), nibble);
    return _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(acc, low, _mm512_loadu_si512(x)), high, _mm512_loadu_si512(x + 64));
  }
}

// d_w · d_x of the 16 groups from `first_group` of one weight row (zero past the row's last group).
FASTVLM_TARGET_AVX512 inline __m512 span_scales(const uint16_t* w_scales, int64_t groups, int64_t first_group,
                                                const float* x_scales) {
  const int64_t left = groups - first_group;
  const __m256i halves = left >= kLanes
                             ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w_scales + first_group))
                             : _mm256_maskz_loadu_epi16(simd::first_lanes(left), w_scales + first_group);
  return _mm512_mul_ps(_mm512_cvtph_ps(halves), _mm512_loadu_ps(x_scales + first_group));
}

// One accumulator per (weight row, activation row) plus the scale products and the shared operands: 8 fit
// the 32 registers.
constexpr int kMaxAccumulatorsAvx512 = 8;

// Each row's step prefetches the same step of a row some whole passes later, at least this many bytes ahead.
// The W rows of a pass are read side by side, each 64 bytes per step: in the block layout (core/quant.h)
// one address stream, in the plain one W streams, which the hardware prefetchers follow poorly (measured:
// without prefetching the 4-row pass was no faster than one row at a time from DRAM, though twice as fast
// from L2). A fixed distance within the row, as this was before, lands in a neighbouring row that the pass
// itself reads when rows are long: on Zen 5, one thread, from DRAM, the 896 x 4864 down projection ran at
// 16-17 GB/s that way and at 23-24 GB/s this way (Q8_0 and Q4_0 alike), the other decode shapes 0-10%
// faster; a minimum of 1-2 KB or 8-16 KB did worse than 4 KB. The lines go to L2, not L1: a whole pass ahead
// is more than L1 holds where rows are long (FastVLM-1.5B's down projection: 4 x 8960 bytes of Q8_0), and on
// Zen 4 a whole decode ran 10-30% slower prefetching into L1 than into L2 (1.5B, Q8_0 and Q4_0; on Zen 5,
// before the rows were stored in blocks, L2 had done no better than L1, and no worse).
constexpr int64_t kMinPrefetchBytes = 4096;

// One step of quant_rows_avx512 below: acc[w][i] += float(dot of the step) · the lanes of scales[w][i]
// picked by lane_index. `bytes` < 64 only for a row's shorter last chunk, outside the main loop so that the
// accumulators stay in registers.
template <WeightType Type, int W, int R>
FASTVLM_TARGET_AVX512 inline __attribute__((always_inline)) void accumulate_step(__m512 (&acc)[W][R], const RowCodes (&rows)[W],
                                                                         const PreparedActivationAvx512* p,
                                                                         int64_t ahead, int64_t step, int64_t bytes,
                                                                         __m512i lane_index,
                                                                         const __m512 (&scales)[W][R]) {
  for (int w = 0; w < W; ++w) {
    const uint8_t* codes = bytes == 64 ? rows[w].first + step * rows[w].chunk_stride : rows[w].last;
    _mm_prefetch(reinterpret_cast<const char*>(codes + ahead), _MM_HINT_T1);
    for (int i = 0; i < R; ++i) {
      const __m512i dot = step_dot<Type>(codes, bytes, _mm512_loadu_si512(p[i].offsets.data() + step * kLanes),
                                         p[i].codes.data() + step * kStepCodes<Type>);
      acc[w][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(lane_index, scales[w][i]), acc[w][i]);
    }
  }
}

// Weight rows [r, r + W) against activation rows [first, first + R): each weight step is loaded once for
// the R activation rows, and each activation step once for the W weight rows (decoding one sequence runs
// W = 4, R = 1; a batch W = 1, R rows). Per lane: acc += float(offset-corrected dot) · (d_w · d_x), over
// the steps in order, then one horizontal sum — the same arithmetic for any W and R, so a result does not
// depend on its batch or on its neighbours.
template <WeightType Type, int W, int R>
FASTVLM_TARGET_AVX512 inline void quant_rows_avx512(const QuantMatrix& m, const PreparedActivationAvx512* p,
                                                    int64_t r, int64_t first, const int32_t* lane_groups, float* y) {
  static_assert(W * R <= kMaxAccumulatorsAvx512);
  constexpr int step_groups = kStepGroups<Type>;
  // Steps whose weight scales one register holds (16 groups): the scales are converted from half and
  // multiplied by d_x once per such span, and each step only permutes its lanes out of the products.
  constexpr int64_t span_steps = kLanes / step_groups;
  const __m512i lane_to_group = _mm512_load_si512(lane_groups);
  const int64_t groups = m.groups_per_row();
  const int64_t steps = (groups + step_groups - 1) / step_groups, full_steps = groups / step_groups;
  const int64_t last_bytes = (groups - full_steps * step_groups) * 64 / step_groups;
  const int64_t pass_bytes = W * quant_row_bytes(Type, m.cols);
  const int64_t ahead = (kMinPrefetchBytes + pass_bytes - 1) / pass_bytes * pass_bytes;
  RowCodes rows[W];
  for (int w = 0; w < W; ++w) rows[w] = m.row(r + w);
  p += first;
  __m512 acc[W][R];
  for (int w = 0; w < W; ++w)
    for (int i = 0; i < R; ++i) acc[w][i] = _mm512_setzero_ps();
  for (int64_t span = 0; span < steps; span += span_steps) {
    __m512 scales[W][R];
    for (int w = 0; w < W; ++w)
      for (int i = 0; i < R; ++i)
        scales[w][i] = span_scales(m.scales + (r + w) * groups, groups, step_groups * span, p[i].scales.data());
    __m512i lane_index = lane_to_group;
    const int64_t span_end = std::min(full_steps, span + span_steps);
    for (int64_t step = span; step < span_end; ++step) {
      accumulate_step<Type, W, R>(acc, rows, p, ahead, step, 64, lane_index, scales);
      lane_index = _mm512_add_epi32(lane_index, _mm512_set1_epi32(step_groups));
    }
    if (span_end < std::min(steps, span + span_steps))
      accumulate_step<Type, W, R>(acc, rows, p, ahead, span_end, last_bytes, lane_index, scales);
  }
  for (int w = 0; w < W; ++w)
    for (int i = 0; i < R; ++i) y[(first + i) * m.rows + r + w] = _mm512_reduce_add_ps(acc[w][i]);
}

// Weight rows per pass when decoding one sequence: a block of the in-memory layout, read as one stream.
constexpr int kWeightRowsAvx512 = 4;
static_assert(kWeightRowsAvx512 == kQuantRowBlock);

template <WeightType Type>
FASTVLM_TARGET_AVX512 void gemv_quant_slice_avx512(const QuantMatrix& m, const PreparedActivationAvx512* p,
                                                   int64_t x_rows, int64_t begin, int64_t end, float* y) {
  // Passed as memory, not as a vector: the row lambda carries no target attribute, and a 512-bit argument
  // there would change its ABI (clang refuses it).
  alignas(64) int32_t lane_groups[kLanes];
  for (int lane = 0; lane < kLanes; ++lane) lane_groups[lane] = lane_group(Type, lane);
  if (x_rows == 1) {
    for (int64_t r = begin; r < end; r += kWeightRowsAvx512) {
      with_row_count<kWeightRowsAvx512>(std::min<int64_t>(kWeightRowsAvx512, end - r), [&]<int W>() {
        quant_rows_avx512<Type, W, 1>(m, p, r, 0, lane_groups, y);
      });
    }
    return;
  }
  for_row_chunks<kMaxAccumulatorsAvx512>(begin, end, x_rows, [&]<int R>(int64_t r, int64_t first) {
    quant_rows_avx512<Type, 1, R>(m, p, r, first, lane_groups, y);
  });
}

// Activation rows per pass of the bf16 kernel: two accumulators each, 8 rows fit the 32 registers.
constexpr int kMaxChunkAvx512 = 8;

// x rounded to bf16 once per call, 32 per register, zero-padded to a whole register: `out` receives
// cols rounded up to a multiple of 32.
FASTVLM_TARGET_AVX512 void convert_activation_bf16(const float* x, int64_t cols, uint16_t* out) {
  for (int64_t c = 0; c < cols; c += 32) {
    const __m512 low = _mm512_maskz_loadu_ps(simd::first_lanes(cols - c), x + c);
    const __m512 high = _mm512_maskz_loadu_ps(simd::first_lanes(cols - c - 16), x + c + 16);
    _mm512_storeu_si512(out + c, (__m512i)_mm512_cvtne2ps_pbh(high, low));
  }
}

// How far ahead of its reads the bf16 kernel prefetches its weight row (into the next rows at a row's end: rows
// are read one after another). Zen 5, one thread, from DRAM (`BM_Gemv_bf16`, 3 alternations): 28.8-31.6 GB/s
// without, 31.7-35.8 with 8 KB, 4 KB in between; on two threads, bound by the memory system, no difference.
constexpr int64_t kBf16PrefetchBytes = 8192;

// Weight row r against activation rows [first, first + R) of x_bf16 (rows `stride` apart, zero-padded).
template <int R>
FASTVLM_TARGET_AVX512 inline void bf16_row_avx512(const uint16_t* w, int64_t rows, int64_t cols,
                                                  const uint16_t* x_bf16, int64_t stride, int64_t r, int64_t first,
                                                  float* y) {
  const int64_t full = cols / 32 * 32;
  const __mmask32 tail_mask = simd::first_lanes<32>(cols - full);
  const uint16_t* row = w + r * cols;
  const uint16_t* xs = x_bf16 + first * stride;
  __m512 acc0[R], acc1[R];
  for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 64 <= full; c += 64) {
    const char* ahead = reinterpret_cast<const char*>(row + c) + kBf16PrefetchBytes;
    _mm_prefetch(ahead, _MM_HINT_T0);
    _mm_prefetch(ahead + 64, _MM_HINT_T0);
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(row + c), w1 = (__m512bh)_mm512_loadu_si512(row + c + 32);
    for (int i = 0; i < R; ++i) {
      acc0[i] = _mm512_dpbf16_ps(acc0[i], w0, (__m512bh)_mm512_loadu_si512(xs + i * stride + c));
      acc1[i] = _mm512_dpbf16_ps(acc1[i], w1, (__m512bh)_mm512_loadu_si512(xs + i * stride + c + 32));
    }
  }
  if (c < full) {
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(row + c);
    for (int i = 0; i < R; ++i)
      acc0[i] = _mm512_dpbf16_ps(acc0[i], w0, (__m512bh)_mm512_loadu_si512(xs + i * stride + c));
  }
  if (tail_mask) {
    const __m512bh w_tail = (__m512bh)_mm512_maskz_loadu_epi16(tail_mask, row + full);
    for (int i = 0; i < R; ++i)
      acc1[i] = _mm512_dpbf16_ps(acc1[i], w_tail, (__m512bh)_mm512_loadu_si512(xs + i * stride + full));
  }
  for (int i = 0; i < R; ++i) y[(first + i) * rows + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
}

FASTVLM_TARGET_AVX512 void gemv_bf16_slice_avx512(const uint16_t* w, int64_t rows, int64_t cols,
                                                  const uint16_t* x_bf16, int64_t stride, int64_t x_rows,
                                                  int64_t begin, int64_t end, float* y) {
  for_row_chunks<kMaxChunkAvx512>(begin, end, x_rows, [&]<int R>(int64_t r, int64_t first) {
    bf16_row_avx512<R>(w, rows, cols, x_bf16, stride, r, first, y);
  });
}

// Decode attention, AVX-512. A score is one fused multiply-add chain over the dim in 16-lane steps (the
// masked tail last) and a horizontal sum; an output lane one chain over the positions in order.

// Queries per pass of the score kernel: one accumulator each, each key step loaded once for all of them.
constexpr int kScoreQueriesAvx512 = 8;

template <int J>
FASTVLM_TARGET_AVX512 inline void attention_scores_block_avx512(const float* queries, const float* keys,
                                                                int64_t positions, int64_t dim, float scale,
                                                                float* scores, int64_t score_stride) {
  const int64_t full = dim & ~int64_t(15);
  const __mmask16 tail = simd::first_lanes(dim - full);
  for (int64_t p = 0; p < positions; ++p) {
    const float* key = keys + p * dim;
    __m512 acc[J];
    for (int j = 0; j < J; ++j) acc[j] = _mm512_setzero_ps();
    for (int64_t c = 0; c < full; c += 16) {
      const __m512 k = _mm512_loadu_ps(key + c);
      for (int j = 0; j < J; ++j) acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(queries + j * dim + c), k, acc[j]);
    }
    if (tail) {
      const __m512 k = _mm512_maskz_loadu_ps(tail, key + full);
      for (int j = 0; j < J; ++j)
        acc[j] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, queries + j * dim + full), k, acc[j]);
    }
    for (int j = 0; j < J; ++j) scores[j * score_stride + p] = scale * _mm512_reduce_add_ps(acc[j]);
  }
}

FASTVLM_TARGET_AVX512 void attention_scores_avx512(const float* queries, int64_t count, const float* keys, int64_t positions, int64_t dim,
                             float scale, float* scores, int64_t score_stride) {
  for (int64_t first = 0; first < count; first += kScoreQueriesAvx512) {
    with_row_count<kScoreQueriesAvx512>(std::min<int64_t>(kScoreQueriesAvx512, count - first), [&]<int J>() {
      attention_scores_block_avx512<J>(queries + first * dim, keys, positions, dim, scale,
                                       scores + first * score_stride, score_stride);
    });
  }
}

// The value kernel keeps a block of J queries x kValueSteps 16-lane steps of the outputs in registers
// over all the positions: each value step is loaded once for the J queries.
constexpr int kValueQueriesAvx512 = 4;
constexpr int kValueSteps = 4;

template <int J>
FASTVLM_TARGET_AVX512 inline void attention_values_block_avx512(const float* weights, int64_t weight_stride,
                                                                const float* values, int64_t positions, int64_t dim,
                                                                float* out) {
  for (int64_t d0 = 0; d0 < dim; d0 += 16 * kValueSteps) {
    __mmask16 lanes[kValueSteps];
    for (int s = 0; s < kValueSteps; ++s) lanes[s] = simd::first_lanes(dim - d0 - 16 * s);
    __m512 acc[J][kValueSteps];
    for (int j = 0; j < J; ++j)
      for (int s = 0; s < kValueSteps; ++s) acc[j][s] = _mm512_setzero_ps();
    for (int64_t p = 0; p < positions; ++p) {
      __m512 weight[J];
      for (int j = 0; j < J; ++j) weight[j] = _mm512_set1_ps(weights[j * weight_stride + p]);
      for (int s = 0; s < kValueSteps; ++s) {
        const __m512 v = _mm512_maskz_loadu_ps(lanes[s], values + p * dim + d0 + 16 * s);
        for (int j = 0; j < J; ++j) acc[j][s] = _mm512_fmadd_ps(weight[j], v, acc[j][s]);
      }
    }
    for (int j = 0; j < J; ++j)
      for (int s = 0; s < kValueSteps; ++s) _mm512_mask_storeu_ps(out + j * dim + d0 + 16 * s, lanes[s], acc[j][s]);
  }
}

FASTVLM_TARGET_AVX512 void attention_values_avx512(const float* weights, int64_t weight_stride, int64_t count, const float* values,
                             int64_t positions, int64_t dim, float* out) {
  for (int64_t first = 0; first < count; first += kValueQueriesAvx512) {
    with_row_count<kValueQueriesAvx512>(std::min<int64_t>(kValueQueriesAvx512, count - first), [&]<int J>() {
      attention_values_block_avx512<J>(weights + first * weight_stride, weight_stride, values, positions, dim,
                                       out + first * dim);
    });
  }
}

FASTVLM_TARGET_AVX2 float dot_f32_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float sum = reduce_add_avx2(acc);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

FASTVLM_TARGET_AVX2 void axpy_f32_avx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}

// ---------------------------------------------------------------------------------------------------------
// Amx path of gemv_quant_batch: 16 outputs x up to 16 activation rows per tile product. Group g's product
// is C[16 outputs][R rows] = A[16 outputs][32 weight codes] · B[32 codes][R rows] (TDPBSSD, exact int32);
// C, stored densely (16·R int32 in R registers, lane l of register k holding output (16k + l) / R and
// activation row (16k + l) % R), is then scaled by d_w[output] · d_x[row] and summed in float, so that the
// float work per group grows with R rather than being 16 registers for any batch. The weights are A in their stored row-major layout (Q8_0 read in place with
// the row stride, Q4_0 unpacked to signed codes in an L1 buffer), so no weight is rearranged; the activation
// codes are put into B's layout (4-code quads, one per row) once per call. Where the vector paths spend
// one multiply-add per weight and activation row, here one tile instruction covers 16 x 16 x 32.

constexpr int kTileOutputs = 16;
constexpr int kMaxBatchRows = 16;
constexpr int kTileGroups = 4;  // groups per step: one accumulator tile each (tmm0-3)
static_assert(kTileGroups * kQuantGroupSize / 2 == kQuantChunkBytes, "a step's Q4_0 codes are one chunk of a row");
constexpr int kQuads = kQuantGroupSize / 4;

struct TileActivation {
  std::vector<int8_t> quads;  // [groups][kQuads][kMaxBatchRows x 4 codes]: B of each group
  std::vector<float> scales;  // [groups][R registers][16 lanes]: d_x of each lane's activation row
  alignas(64) int32_t lane_outputs[kMaxBatchRows][16];  // each lane's output within the block
};

void prepare_tile_activation(const QuantizedActivation* q, int64_t x_rows, int64_t groups, TileActivation& t) {
  t.quads.assign(size_t(groups * kQuads * 64), 0);
  t.scales.resize(size_t(groups * x_rows * 16));
  for (int64_t lane = 0; lane < x_rows * 16; ++lane) t.lane_outputs[lane / 16][lane % 16] = int32_t(lane / x_rows);
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t lane = 0; lane < x_rows * 16; ++lane)
      t.scales[size_t(g * x_rows * 16 + lane)] = q[lane % x_rows].scales[size_t(g)];
    for (int64_t i = 0; i < x_rows; ++i) {
      for (int quad = 0; quad < kQuads; ++quad)
        std::memcpy(&t.quads[size_t((g * kQuads + quad) * 64 + i * 4)],
                    q[i].codes.data() + g * kQuantGroupSize + quad * 4, 4);
    }
  }
}

// GCC 12 emits the tile instructions as asm statements without a memory clobber: this keeps plain loads
// and stores of their operands on the right side of them.
inline void tile_memory_barrier() { asm volatile("" ::: "memory"); }

// Accumulator tile j (0..3) = A (row stride a_stride) · B, with A and B in tiles 4/6 or 5/7 by the parity of
// j so that consecutive products do not wait for each other's operands. Tile numbers are literals: GCC
// writes them into the instruction text.
FASTVLM_TARGET_AMX inline void group_product(int j, const int8_t* a, int64_t a_stride, const int8_t* b) {
  switch (j) {
    case 0: _tile_zero(0); _tile_loadd(4, a, a_stride); _tile_loadd(6, b, 64); _tile_dpbssd(0, 4, 6); break;
    case 1: _tile_zero(1); _tile_loadd(5, a, a_stride); _tile_loadd(7, b, 64); _tile_dpbssd(1, 5, 7); break;
    case 2: _tile_zero(2); _tile_loadd(4, a, a_stride); _tile_loadd(6, b, 64); _tile_dpbssd(2, 4, 6); break;
    default: _tile_zero(3); _tile_loadd(5, a, a_stride); _tile_loadd(7, b, 64); _tile_dpbssd(3, 5, 7); break;
  }
}

// Accumulator tile j to c, its 16 rows of `row_bytes` back to back.
FASTVLM_TARGET_AMX inline void store_product(int j, int32_t* c, int64_t row_bytes) {
  switch (j) {
    case 0: _tile_stored(0, c, row_bytes); break;
    case 1: _tile_stored(1, c, row_bytes); break;
    case 2: _tile_stored(2, c, row_bytes); break;
    default: _tile_stored(3, c, row_bytes); break;
  }
}

struct alignas(64) TileBlockScratch {
  int8_t staged[kTileOutputs][kTileGroups * kQuantGroupSize];  // A when not read in place
  int32_t sums[kTileGroups][kTileOutputs * kMaxBatchRows];     // the accumulator tiles of a step
  float out[kTileOutputs * kMaxBatchRows];
};

// The signed codes of `count` (1..4) Q4_0 groups of one row, 32 per group in natural order.
FASTVLM_TARGET_AMX inline void unpack_q4_groups(const uint8_t* packed, int count, int8_t* out) {
  const __mmask64 lanes = count == kTileGroups ? ~__mmask64(0) : (__mmask64(1) << (count * 16)) - 1;
  const __m512i bytes = _mm512_maskz_loadu_epi8(lanes, packed);
  const __m512i nibble = _mm512_set1_epi8(0x0f), eight = _mm512_set1_epi8(8);
  const __m512i low = _mm512_and_si512(bytes, nibble), high = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
  // Group k is the low nibbles of its 16 bytes (codes 0..15), then their high nibbles (codes 16..31).
  const __m512i first = _mm512_permutex2var_epi64(low, _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11), high);
  const __m512i second = _mm512_permutex2var_epi64(low, _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15), high);
  _mm512_storeu_si512(out, _mm512_sub_epi8(first, eight));
  _mm512_storeu_si512(out + 64, _mm512_sub_epi8(second, eight));
}

// y[i, n0 + n] for the 16-output blocks [block_begin, block_end) and R activation rows; the caller has
// loaded the tile config.
template <WeightType Type, int R>
FASTVLM_TARGET_AMX void gemv_quant_blocks_amx(const QuantMatrix& m, const TileActivation& t, int64_t block_begin,
                                              int64_t block_end, float* y) {
  const int64_t groups = m.groups_per_row();
  const int64_t row_bytes = quant_row_bytes(Type, m.cols);
  TileBlockScratch scratch{};
  std::vector<float> w_scales(size_t(kTileOutputs * groups));
  for (int64_t block = block_begin; block < block_end; ++block) {
    const int64_t n0 = block * kTileOutputs;
    const int valid = int(std::min<int64_t>(kTileOutputs, m.rows - n0));
    // Q8_0 rows are read in place (as tile rows row_bytes apart) where they are stored plainly and the block
    // does not run past the last row.
    const bool in_place = Type == WeightType::Q8_0 && valid == kTileOutputs && m.row_block == 1;
    if (valid < kTileOutputs) std::memset(scratch.staged, 0, sizeof scratch.staged);
    for (int n = 0; n < kTileOutputs; ++n) {
      for (int64_t g = 0; g < groups; g += 16) {
        const __mmask16 lanes = n < valid ? simd::first_lanes(groups - g) : 0;
        const __m256i halves = _mm256_maskz_loadu_epi16(lanes, m.scales + (n0 + n) * groups + g);
        _mm512_mask_storeu_ps(w_scales.data() + n * groups + g, simd::first_lanes(groups - g), _mm512_cvtph_ps(halves));
      }
    }
    // The weight scales are gathered per group from w_scales[output][group].
    const __m512i scale_index = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                   _mm512_set1_epi32(int(groups)));
    __m512 acc[R];
    for (int k = 0; k < R; ++k) acc[k] = _mm512_setzero_ps();
    // A block's weights are one contiguous span, but the tiles walk its 16 rows side by side, which the
    // hardware prefetchers do not follow: the next block's span is prefetched in slices, one per step.
    const uint8_t* next_block = m.codes_from_row(n0 + kTileOutputs);
    const int64_t next_lines = std::max<int64_t>(0, std::min<int64_t>(kTileOutputs, m.rows - n0 - kTileOutputs)) * row_bytes / 64;
    const int64_t steps = (groups + kTileGroups - 1) / kTileGroups;
    const int64_t lines_per_step = (next_lines + steps - 1) / steps;
    for (int64_t g0 = 0; g0 < groups; g0 += kTileGroups) {
      const int count = int(std::min<int64_t>(kTileGroups, groups - g0));
      const int64_t first_line = g0 / kTileGroups * lines_per_step;
      for (int64_t line = first_line; line < std::min(next_lines, first_line + lines_per_step); ++line)
        _mm_prefetch(reinterpret_cast<const char*>(next_block + line * 64), _MM_HINT_T0);
      const int8_t* a = &scratch.staged[0][0];
      int64_t a_stride = sizeof scratch.staged[0];
      if (in_place) {
        a = reinterpret_cast<const int8_t*>(m.codes + n0 * row_bytes + g0 * kQuantGroupSize);
        a_stride = row_bytes;
      } else {
        for (int n = 0; n < valid; ++n) {
          const RowCodes row = m.row(n0 + n);
          if constexpr (Type == WeightType::Q8_0) {
            // The step's groups start a chunk (kTileGroups · 32 bytes is two) and fill up to two.
            const int64_t bytes = count * kQuantGroupSize;
            for (int64_t b = 0; b < bytes; b += kQuantChunkBytes)
              std::memcpy(scratch.staged[n] + b, row.at(g0 * kQuantGroupSize + b), size_t(std::min(kQuantChunkBytes, bytes - b)));
          } else {
            // kTileGroups Q4_0 groups are one chunk.
            unpack_q4_groups(row.at(g0 * (kQuantGroupSize / 2)), count, scratch.staged[n]);
          }
        }
        tile_memory_barrier();
      }
      for (int j = 0; j < count; ++j)
        group_product(j, a + j * kQuantGroupSize, a_stride, t.quads.data() + (g0 + j) * kQuads * 64);
      for (int j = 0; j < count; ++j) store_product(j, scratch.sums[j], R * 4);
      tile_memory_barrier();
      for (int j = 0; j < count; ++j) {
        const __m512 w_scale = _mm512_i32gather_ps(scale_index, w_scales.data() + g0 + j, 4);
        const float* x_scales = t.scales.data() + (g0 + j) * R * 16;
        for (int k = 0; k < R; ++k) {
          const __m512 lane_w_scale = _mm512_permutexvar_ps(_mm512_load_si512(t.lane_outputs[k]), w_scale);
          const __m512 sums = _mm512_cvtepi32_ps(_mm512_load_si512(scratch.sums[j] + 16 * k));
          acc[k] = _mm512_fmadd_ps(sums, _mm512_mul_ps(lane_w_scale, _mm512_loadu_ps(x_scales + 16 * k)), acc[k]);
        }
      }
    }
    for (int k = 0; k < R; ++k) _mm512_store_ps(scratch.out + 16 * k, acc[k]);
    for (int lane = 0; lane < 16 * R; ++lane)
      if (lane / R < valid) y[(lane % R) * m.rows + n0 + lane / R] = scratch.out[lane];
  }
}

FASTVLM_TARGET_AMX void gemv_quant_slice_amx(const QuantMatrix& m, const TileActivation& t, int64_t x_rows,
                                             int64_t block_begin, int64_t block_end, float* y) {
  kernels::TileConfig config;
  for (int tile = 0; tile < kTileGroups; ++tile) config.shape(tile, kTileOutputs, int(x_rows) * 4);
  for (int tile : {4, 5}) config.shape(tile, kTileOutputs, kQuantGroupSize);
  for (int tile : {6, 7}) config.shape(tile, kQuads, int(x_rows) * 4);
  kernels::load_tile_config(config);
  with_row_count<kMaxBatchRows>(x_rows, [&]<int R>() {
    if (m.type == WeightType::Q8_0) {
      gemv_quant_blocks_amx<WeightType::Q8_0, R>(m, t, block_begin, block_end, y);
    } else {
      gemv_quant_blocks_amx<WeightType::Q4_0, R>(m, t, block_begin, block_end, y);
    }
  });
  _tile_release();
}

// Whole-call variants per level; x is [x_rows, cols] and y [x_rows, rows]. The per-call activation buffers
// are thread_local so that concurrent callers do not share them; the OpenMP workers must get them through
// plain pointers (naming a thread_local inside the parallel region would reach the worker's own, empty,
// instance).
void gemv_bf16_scalar(const uint16_t* weights, int64_t rows, int64_t cols, const float* x, int64_t x_rows, float* y) {
  for_row_slices(rows, cols, [&](int64_t begin, int64_t end) {
    gemv_bf16_slice_scalar(weights, rows, cols, x, x_rows, begin, end, y);
  });
}

void gemv_bf16_avx2(const uint16_t* weights, int64_t rows, int64_t cols, const float* x, int64_t x_rows, float* y) {
  for_row_slices(rows, cols, [&](int64_t begin, int64_t end) {
    gemv_bf16_slice_avx2(weights, rows, cols, x, x_rows, begin, end, y);
  });
}

void gemv_bf16_avx512(const uint16_t* weights, int64_t rows, int64_t cols, const float* x, int64_t x_rows, float* y) {
  thread_local AlignedVector<uint16_t> x_bf16_buffer;
  const int64_t stride = (cols + 31) / 32 * 32;
  x_bf16_buffer.resize(size_t(x_rows * stride));
  for (int64_t i = 0; i < x_rows; ++i) convert_activation_bf16(x + i * cols, cols, x_bf16_buffer.data() + i * stride);
  const uint16_t* x_bf16 = x_bf16_buffer.data();
  for_row_slices(rows, cols, [&](int64_t begin, int64_t end) {
    gemv_bf16_slice_avx512(weights, rows, cols, x_bf16, stride, x_rows, begin, end, y);
  });
}

// Each activation row quantised on its own, exactly as a single-row call would.
template <typename QuantizeGroup>
[[gnu::always_inline]] inline const QuantizedActivation* quantize_activation_rows(const float* x, int64_t cols,
                                                                                 int64_t x_rows,
                                                                                 QuantizeGroup quantize_group) {
  thread_local std::vector<QuantizedActivation> buffers;
  if (int64_t(buffers.size()) < x_rows) buffers.resize(size_t(x_rows));
  for (int64_t i = 0; i < x_rows; ++i) quantize_activation(x + i * cols, cols, buffers[size_t(i)], quantize_group);
  return buffers.data();
}

// The quantised products take several matrices of one type and width on the same input (gemv_quant_shared;
// one matrix otherwise): the input is quantised once for all of them.
using Matrices = std::span<const QuantMatrix* const>;
using Outputs = std::span<float* const>;

void gemv_quant_scalar(Matrices ms, const float* x, int64_t x_rows, Outputs ys) {
  const QuantizedActivation* q = quantize_activation_rows(x, ms[0]->cols, x_rows, quantize_group_scalar);
  for_row_slices(ms, [&](size_t i, int64_t begin, int64_t end) {
    gemv_quant_slice_scalar(*ms[i], q, x_rows, begin, end, ys[i]);
  });
}

FASTVLM_TARGET_AVX2 void quantize_group_avx2(const float* x, int8_t* codes, float& scale, int32_t& sum) {
  scale = simd::quantize_group_avx2(x, codes, &sum);
}

// The rest of gemv_quant_avx2 for the matrices' one weight type.
template <WeightType Type>
void gemv_quant_typed_avx2(Matrices ms, const QuantizedActivation* q, int64_t x_rows, Outputs ys) {
  thread_local std::vector<PreparedActivationAvx2> prepared_buffers;
  if (int64_t(prepared_buffers.size()) < x_rows) prepared_buffers.resize(size_t(x_rows));
  for (int64_t i = 0; i < x_rows; ++i)
    prepare_activation_avx2<Type>(q[i], ms[0]->groups_per_row(), prepared_buffers[size_t(i)]);
  const PreparedActivationAvx2* prepared = prepared_buffers.data();
  for_row_slices(ms, [&](size_t i, int64_t begin, int64_t end) {
    gemv_quant_slice_avx2<Type>(*ms[i], prepared, x_rows, begin, end, ys[i]);
  });
}

void gemv_quant_avx2(Matrices ms, const float* x, int64_t x_rows, Outputs ys) {
  const QuantizedActivation* q = quantize_activation_rows(x, ms[0]->cols, x_rows, quantize_group_avx2);
  if (ms[0]->type == WeightType::Q8_0)
    gemv_quant_typed_avx2<WeightType::Q8_0>(ms, q, x_rows, ys);
  else
    gemv_quant_typed_avx2<WeightType::Q4_0>(ms, q, x_rows, ys);
}

FASTVLM_TARGET_AVX512 void quantize_group_avx512(const float* x, int8_t* codes, float& scale, int32_t& sum) {
  scale = simd::quantize_group_avx512(x, codes, &sum);
}

// The rest of gemv_quant_avx512 for the matrices' one weight type.
template <WeightType Type>
void gemv_quant_typed_avx512(Matrices ms, const QuantizedActivation* q, int64_t x_rows, Outputs ys) {
  thread_local std::vector<PreparedActivationAvx512> prepared_buffers;
  if (int64_t(prepared_buffers.size()) < x_rows) prepared_buffers.resize(size_t(x_rows));
  for (int64_t i = 0; i < x_rows; ++i)
    prepare_activation_avx512<Type>(q[i], ms[0]->groups_per_row(), prepared_buffers[size_t(i)]);
  const PreparedActivationAvx512* prepared = prepared_buffers.data();
  for_row_slices(ms, [&](size_t i, int64_t begin, int64_t end) {
    gemv_quant_slice_avx512<Type>(*ms[i], prepared, x_rows, begin, end, ys[i]);
  });
}

void gemv_quant_avx512(Matrices ms, const float* x, int64_t x_rows, Outputs ys) {
  const QuantizedActivation* q = quantize_activation_rows(x, ms[0]->cols, x_rows, quantize_group_avx512);
  if (ms[0]->type == WeightType::Q8_0)
    gemv_quant_typed_avx512<WeightType::Q8_0>(ms, q, x_rows, ys);
  else
    gemv_quant_typed_avx512<WeightType::Q4_0>(ms, q, x_rows, ys);
}

// One matrix through a level's product (the batch fallback of the levels without int8 tiles).
template <void (*Quant)(Matrices, const float*, int64_t, Outputs)>
void gemv_quant_one(const QuantMatrix& m, const float* x, int64_t x_rows, float* y) {
  const QuantMatrix* const matrix = &m;
  Quant(Matrices(&matrix, 1), x, x_rows, Outputs(&y, 1));
}

// Batches past 16 rows go through in chunks of 16, each weight then read once per chunk.
void gemv_quant_batch_amx(const QuantMatrix& m, const float* x, int64_t x_rows, float* y) {
  for (int64_t first = 0; first < x_rows; first += kMaxBatchRows) {
    const int64_t chunk = std::min<int64_t>(kMaxBatchRows, x_rows - first);
    const QuantizedActivation* q = quantize_activation_rows(x + first * m.cols, m.cols, chunk, quantize_group_avx512);
    thread_local TileActivation prepared_buffer;
    prepare_tile_activation(q, chunk, m.groups_per_row(), prepared_buffer);
    const TileActivation* prepared = &prepared_buffer;
    float* y_chunk = y + first * m.rows;
    const int64_t blocks = (m.rows + kTileOutputs - 1) / kTileOutputs;
    for_row_slices(blocks, kTileOutputs * m.cols, [&](int64_t begin, int64_t end) {
      gemv_quant_slice_amx(m, *prepared, chunk, begin, end, y_chunk);
    });
  }
}

float dot_f32_scalar(const float* a, const float* b, int64_t n) {
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void axpy_f32_scalar(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Decode attention on the levels below AVX-512: one dot product per (query, key) and one axpy per (query,
// value), each key and value used for all the queries while it is in L1.
template <float (*Dot)(const float*, const float*, int64_t)>
void attention_scores_with(const float* queries, int64_t count, const float* keys, int64_t positions, int64_t dim,
                           float scale, float* scores, int64_t score_stride) {
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t j = 0; j < count; ++j) scores[j * score_stride + p] = scale * Dot(queries + j * dim, keys + p * dim, dim);
}

template <void (*Axpy)(float, const float*, float*, int64_t)>
void attention_values_with(const float* weights, int64_t weight_stride, int64_t count, const float* values,
                           int64_t positions, int64_t dim, float* out) {
  std::fill(out, out + count * dim, 0.0f);
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t j = 0; j < count; ++j) Axpy(weights[j * weight_stride + p], values + p * dim, out + j * dim, dim);
}

struct GemvOps {
  void (*bf16)(const uint16_t*, int64_t, int64_t, const float*, int64_t, float*);
  void (*quant)(Matrices, const float*, int64_t, Outputs);
  void (*quant_batch)(const QuantMatrix&, const float*, int64_t, float*);
  void (*attention_scores)(const float*, int64_t, const float*, int64_t, int64_t, float, float*, int64_t);
  void (*attention_values)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*);
};

const GemvOps& ops() {
  static const GemvOps chosen = [] {
    GemvOps level = kernels::choose<GemvOps>({
        .scalar = {gemv_bf16_scalar, gemv_quant_scalar, gemv_quant_one<gemv_quant_scalar>,
                   attention_scores_with<dot_f32_scalar>, attention_values_with<axpy_f32_scalar>},
        .avx2 = {gemv_bf16_avx2, gemv_quant_avx2, gemv_quant_one<gemv_quant_avx2>,
                 attention_scores_with<dot_f32_avx2>, attention_values_with<axpy_f32_avx2>},
        .avx512 = {gemv_bf16_avx512, gemv_quant_avx512, gemv_quant_one<gemv_quant_avx512>,
                   attention_scores_avx512, attention_values_avx512},
    });
    // kernels::choose runs the Avx512 variants at the Amx level; the int8 tiles serve the batched product.
    if (active_isa() >= Isa::Amx) level.quant_batch = gemv_quant_batch_amx;
    return level;
  }();
  return chosen;
}

}  // namespace

void gemv_bf16(const uint16_t* weights, int64_t rows, int64_t cols, const float* x, float* y) {
  ops().bf16(weights, rows, cols, x, 1, y);
}

void gemv_bf16_rows(const uint16_t* weights, int64_t rows, int64_t cols, const float* x, int64_t x_rows, float* y) {
  ops().bf16(weights, rows, cols, x, x_rows, y);
}

void gemv_quant(const QuantMatrix& matrix, const float* x, float* y) { gemv_quant_rows(matrix, x, 1, y); }

void gemv_quant_rows(const QuantMatrix& matrix, const float* x, int64_t x_rows, float* y) {
  const QuantMatrix* const one = &matrix;
  ops().quant(Matrices(&one, 1), x, x_rows, Outputs(&y, 1));
}

void gemv_quant_shared(std::span<const QuantMatrix* const> matrices, const float* x, std::span<float* const> ys) {
  if (matrices.empty() || matrices.size() != ys.size())
    throw Error("internal: gemv_quant_shared with " + std::to_string(matrices.size()) + " matrices and " +
                std::to_string(ys.size()) + " outputs");
  for (const QuantMatrix* m : matrices)
    if (m->type != matrices[0]->type || m->cols != matrices[0]->cols)
      throw Error("internal: gemv_quant_shared on matrices of different types or widths");
  ops().quant(matrices, x, 1, ys);
}

void gemv_quant_batch(const QuantMatrix& matrix, const float* x, int64_t x_rows, float* y) {
  ops().quant_batch(matrix, x, x_rows, y);
}

void attention_scores_f32(const float* queries, int64_t count, const float* keys, int64_t positions, int64_t dim,
                          float scale, float* scores, int64_t score_stride) {
  ops().attention_scores(queries, count, keys, positions, dim, scale, scores, score_stride);
}

void attention_values_f32(const float* weights, int64_t weight_stride, int64_t count, const float* values,
                          int64_t positions, int64_t dim, float* out) {
  ops().attention_values(weights, weight_stride, count, values, positions, dim, out);
}

}  // namespace fastvlm
