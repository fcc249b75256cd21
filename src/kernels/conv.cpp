#include "kernels/conv.h"

#include <immintrin.h>

// GCC 12's AVX-512 headers build unmasked results from _mm512_undefined_ps(), which -O3 reports as
// "may be used uninitialized" once inlined; the lanes are all written.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>

#include "kernels/dispatch.h"
#include "kernels/simd_mask.h"
#include "kernels/target.h"

namespace fastvlm {
namespace {

// A conv's input map, row by row: contiguous, or a table of row addresses.
struct InputRows {
  const float* data;          // contiguous map, when `table` is null
  const float* const* table;  // else row y at table[y]
  int64_t row_size;           // floats per row of the contiguous map
  const float* operator[](int64_t y) const { return table ? table[y] : data + y * row_size; }
};

// The window of output pixel `o` along one axis: taps [begin, end) fall inside the input.
struct TapRange {
  int64_t origin;  // input coordinate of tap 0 (may be negative)
  int begin, end;
};

inline TapRange tap_range(int64_t o, int stride, int kernel, int64_t in_size) {
  const int64_t origin = o * stride - kernel / 2;
  return {origin, int(std::max<int64_t>(0, -origin)), int(std::min<int64_t>(kernel, in_size - origin))};
}

// The generic loop nest for any group structure: per output pixel, per tap, per group, a multiply-add
// over contiguous output channels. Always inlined into each level's generic_rows (conv_strips.inc) and the
// baseline's, so the compiler vectorises the inner loop for each instruction set.
[[gnu::always_inline]] inline void generic_conv_rows(const ConvParams& conv, const InputRows& input,
                                                     int64_t in_h, int64_t in_w, float* __restrict output,
                                                     int64_t row_begin, int64_t row_end) {
  const int64_t out_w = conv_output_size(conv, in_w), out_c = conv.out_channels, in_c = conv.in_channels;
  const int64_t in_per_group = in_c / conv.groups, out_per_group = out_c / conv.groups;
  const int64_t tap_stride = in_per_group * out_c;
  for (int64_t oy = row_begin; oy < row_end; ++oy) {
    const TapRange ys = tap_range(oy, conv.stride, conv.kernel, in_h);
    for (int64_t ox = 0; ox < out_w; ++ox) {
      const TapRange xs = tap_range(ox, conv.stride, conv.kernel, in_w);
      float* __restrict dst = output + ((oy - row_begin) * out_w + ox) * out_c;
      std::copy(conv.bias, conv.bias + out_c, dst);
      for (int ky = ys.begin; ky < ys.end; ++ky)
        for (int kx = xs.begin; kx < xs.end; ++kx) {
          const float* __restrict src = input[ys.origin + ky] + (xs.origin + kx) * in_c;
          const float* __restrict tap_weight = conv.weight + (ky * conv.kernel + kx) * tap_stride;
          for (int64_t g = 0; g < conv.groups; ++g)
            for (int64_t j = 0; j < in_per_group; ++j) {
              const float value = src[g * in_per_group + j];
              const float* __restrict w = tap_weight + j * out_c + g * out_per_group;
              float* __restrict group_dst = dst + g * out_per_group;
              for (int64_t o = 0; o < out_per_group; ++o) group_dst[o] += w[o] * value;
            }
        }
    }
  }
}

// A conv kernel over rows [row_begin, row_end) of the output.
using ConvRowsKernel = void (*)(const ConvParams&, const InputRows&, int64_t, int64_t, float*, int64_t, int64_t);

// Whether input column `x` lies inside a row of `width`.
inline bool inside(int64_t x, int64_t width) { return uint64_t(x) < uint64_t(width); }

// The hand-written kernels of conv_strips.inc at each level, on that level's float vectors.
namespace conv_avx512 {
FASTVLM_BEGIN_TARGET_AVX512
// 16 lanes; 32 registers hold a 16-pixel depthwise strip with up to 7 weight vectors and the input in flight,
// or 8 x 3 dense accumulators with their 3 weight vectors and a broadcast.
struct Lanes {
  using Reg = __m512;
  using Mask = __mmask16;
  static constexpr int kWidth = 16;
  static constexpr int kDensePixels = 8, kDenseVectors = 3;
  static constexpr int depthwise_strip(int /*kernel*/) { return 16; }
  static Mask first(int64_t count) { return simd::first_lanes(count); }
  static Mask none() { return 0; }
  static Reg load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  // The inputs behind the `outputs` lanes, each twice: i0 i0 i1 i1 ... i7 i7.
  static Reg load_duplicated(const float* p, Mask outputs) {
    const __m512i duplicate = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __mmask8 inputs = __mmask8(simd::first_lanes((__builtin_popcount(outputs) + 1) / 2));
    return _mm512_permutexvar_ps(duplicate, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(inputs, p)));
  }
  // Whole vectors (every channel count of the tower) take plain stores: the stem's dense conv, whose output
  // rows are not yet in cache, spent most of its time on masked stores of full masks (perf), and ran in
  // 16-19 ms instead of 32-72 with plain ones (BM_DepthwiseConv 1024 / 3 -> 96, one thread, AMD Zen 5).
  static void store(float* p, Mask m, Reg v) {
    if (m == Mask(~0u))
      _mm512_storeu_ps(p, v);
    else
      _mm512_mask_storeu_ps(p, m, v);
  }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg broadcast(float x) { return _mm512_set1_ps(x); }
  // 32 registers leave the compiler room for the intrinsics' strips: no assembly ones.
  static bool interior_strip(int, int, const float* const*, int64_t, const float*, const float*, int64_t, float*) {
    return false;
  }
};
#include "kernels/conv_strips.inc"
FASTVLM_END_TARGET
}  // namespace conv_avx512

namespace conv_avx2 {
FASTVLM_BEGIN_TARGET_AVX2
// The interior strips (every input inside the row, all 8 lanes) of the two depthwise convs that take most of
// the tower's conv time, in assembly: 7x7 (every ConvFFN and RepCPE) with 8 pixels, 3x3 (every RepMixer)
// with 12. The strip's accumulators, one kernel row's weights and one input fill all 16 ymm registers, which
// GCC 12 does not manage from conv_strips.inc's intrinsics: it spilled accumulators and the 14 input
// addresses to the stack. One thread, 128x128x192 (bench_vision_kernels BM_DepthwiseConv), of the 99
// GFLOP/s FMA peak: 7x7 27 -> 35 GFLOP/s, 3x3 8.5 -> 10; the rest is the inputs' trips from L2 and L3
// (one strip's rows take 75 KB, a row's seven 688 KB): from L1 the 7x7 strip runs at ~72.
// Registers: accumulators ymm0 .. ymm(Strip - 1), the kernel row's weights the next Kernel, the input ymm15.
// Operands: `rows[r]` the strip's first input (at channel c0) in the r-th of the `count` kernel rows that lie
// inside the map; `weights` tap (first of those rows, 0) at c0, the row's taps and then the next row's
// `channels` apart; inputs and outputs `channels` apart too (one channel per group).
#define FASTVLM_DW_FMA(w, acc) "vfmadd231ps %%ymm" #w ", %%ymm15, %%ymm" #acc "\n\t"
#define FASTVLM_DW_INPUT "vmovups (%[input]), %%ymm15\n\t add %[step], %[input]\n\t"
#define FASTVLM_DW_WEIGHT(w) "vmovups (%[weights]), %%ymm" #w "\n\t add %[step], %[weights]\n\t"
#define FASTVLM_DW_BIAS(acc) "vmovaps %%ymm0, %%ymm" #acc "\n\t"
#define FASTVLM_DW_STORE(acc) "vmovups %%ymm" #acc ", (%[out])\n\t add %[step], %[out]\n\t"
#define FASTVLM_DW_OPERANDS                                                                         \
  : [rows] "+r"(rows), [count] "+r"(count), [weights] "+r"(weights), [out] "+r"(out), [input] "=&r"(input) \
  : [step] "r"(step), [bias] "r"(bias)                                                              \
  : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", \
    "xmm13", "xmm14", "xmm15", "memory", "cc"

// The strip's assembly around its kernel-specific parts: accumulators from the bias, then per kernel row its
// weights and its inputs with their FMAs, then the stores.
#define FASTVLM_DW_STRIP(biases, kernel_row_weights, inputs_and_fmas, stores)                 \
  asm volatile("vmovups (%[bias]), %%ymm0\n\t" biases                                        \
               "test %[count], %[count]\n\t jz 2f\n"                                        \
               "1:\n\t mov (%[rows]), %[input]\n\t add $8, %[rows]\n\t" kernel_row_weights \
               inputs_and_fmas "dec %[count]\n\t jnz 1b\n"                                  \
               "2:\n\t" stores "vzeroupper" FASTVLM_DW_OPERANDS)

// Kernel 7: 8 pixels, input i feeding pixel i - kx through tap kx (weights ymm8 + kx); kernel 3: 12 pixels
// (weights ymm12 + kx).
template <int Kernel>
void depthwise_interior_strip(const float* const* rows, int64_t count, const float* weights, const float* bias,
                              int64_t channels, float* out) {
  const int64_t step = channels * int64_t(sizeof(float));
  const float* input;
  if constexpr (Kernel == 7)
    FASTVLM_DW_STRIP(
        FASTVLM_DW_BIAS(1) FASTVLM_DW_BIAS(2) FASTVLM_DW_BIAS(3) FASTVLM_DW_BIAS(4) FASTVLM_DW_BIAS(5)
        FASTVLM_DW_BIAS(6) FASTVLM_DW_BIAS(7),
        FASTVLM_DW_WEIGHT(8) FASTVLM_DW_WEIGHT(9) FASTVLM_DW_WEIGHT(10) FASTVLM_DW_WEIGHT(11) FASTVLM_DW_WEIGHT(12)
        FASTVLM_DW_WEIGHT(13) FASTVLM_DW_WEIGHT(14),
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(8, 0)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(8, 1) FASTVLM_DW_FMA(9, 0)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(8, 2) FASTVLM_DW_FMA(9, 1) FASTVLM_DW_FMA(10, 0)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(8, 3) FASTVLM_DW_FMA(9, 2) FASTVLM_DW_FMA(10, 1) FASTVLM_DW_FMA(11, 0)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(8, 4) FASTVLM_DW_FMA(9, 3) FASTVLM_DW_FMA(10, 2) FASTVLM_DW_FMA(11, 1)
                         FASTVLM_DW_FMA(12, 0)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(8, 5) FASTVLM_DW_FMA(9, 4) FASTVLM_DW_FMA(10, 3) FASTVLM_DW_FMA(11, 2)
                         FASTVLM_DW_FMA(12, 1) FASTVLM_DW_FMA(13, 0)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(8, 6) FASTVLM_DW_FMA(9, 5) FASTVLM_DW_FMA(10, 4) FASTVLM_DW_FMA(11, 3)
                         FASTVLM_DW_FMA(12, 2) FASTVLM_DW_FMA(13, 1) FASTVLM_DW_FMA(14, 0)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(8, 7) FASTVLM_DW_FMA(9, 6) FASTVLM_DW_FMA(10, 5) FASTVLM_DW_FMA(11, 4)
                         FASTVLM_DW_FMA(12, 3) FASTVLM_DW_FMA(13, 2) FASTVLM_DW_FMA(14, 1)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(9, 7) FASTVLM_DW_FMA(10, 6) FASTVLM_DW_FMA(11, 5) FASTVLM_DW_FMA(12, 4)
                         FASTVLM_DW_FMA(13, 3) FASTVLM_DW_FMA(14, 2)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(10, 7) FASTVLM_DW_FMA(11, 6) FASTVLM_DW_FMA(12, 5) FASTVLM_DW_FMA(13, 4)
                         FASTVLM_DW_FMA(14, 3)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(11, 7) FASTVLM_DW_FMA(12, 6) FASTVLM_DW_FMA(13, 5) FASTVLM_DW_FMA(14, 4)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 7) FASTVLM_DW_FMA(13, 6) FASTVLM_DW_FMA(14, 5)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(13, 7) FASTVLM_DW_FMA(14, 6)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(14, 7),
        FASTVLM_DW_STORE(0) FASTVLM_DW_STORE(1) FASTVLM_DW_STORE(2) FASTVLM_DW_STORE(3) FASTVLM_DW_STORE(4)
        FASTVLM_DW_STORE(5) FASTVLM_DW_STORE(6) FASTVLM_DW_STORE(7));
  else
    FASTVLM_DW_STRIP(
        FASTVLM_DW_BIAS(1) FASTVLM_DW_BIAS(2) FASTVLM_DW_BIAS(3) FASTVLM_DW_BIAS(4) FASTVLM_DW_BIAS(5)
        FASTVLM_DW_BIAS(6) FASTVLM_DW_BIAS(7) FASTVLM_DW_BIAS(8) FASTVLM_DW_BIAS(9) FASTVLM_DW_BIAS(10)
        FASTVLM_DW_BIAS(11),
        FASTVLM_DW_WEIGHT(12) FASTVLM_DW_WEIGHT(13) FASTVLM_DW_WEIGHT(14),
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 0)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 1) FASTVLM_DW_FMA(13, 0)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 2) FASTVLM_DW_FMA(13, 1) FASTVLM_DW_FMA(14, 0)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 3) FASTVLM_DW_FMA(13, 2) FASTVLM_DW_FMA(14, 1)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 4) FASTVLM_DW_FMA(13, 3) FASTVLM_DW_FMA(14, 2)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 5) FASTVLM_DW_FMA(13, 4) FASTVLM_DW_FMA(14, 3)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 6) FASTVLM_DW_FMA(13, 5) FASTVLM_DW_FMA(14, 4)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 7) FASTVLM_DW_FMA(13, 6) FASTVLM_DW_FMA(14, 5)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 8) FASTVLM_DW_FMA(13, 7) FASTVLM_DW_FMA(14, 6)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 9) FASTVLM_DW_FMA(13, 8) FASTVLM_DW_FMA(14, 7)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 10) FASTVLM_DW_FMA(13, 9) FASTVLM_DW_FMA(14, 8)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(12, 11) FASTVLM_DW_FMA(13, 10) FASTVLM_DW_FMA(14, 9)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(13, 11) FASTVLM_DW_FMA(14, 10)
        FASTVLM_DW_INPUT FASTVLM_DW_FMA(14, 11),
        FASTVLM_DW_STORE(0) FASTVLM_DW_STORE(1) FASTVLM_DW_STORE(2) FASTVLM_DW_STORE(3) FASTVLM_DW_STORE(4)
        FASTVLM_DW_STORE(5) FASTVLM_DW_STORE(6) FASTVLM_DW_STORE(7) FASTVLM_DW_STORE(8) FASTVLM_DW_STORE(9)
        FASTVLM_DW_STORE(10) FASTVLM_DW_STORE(11));
}
#undef FASTVLM_DW_FMA
#undef FASTVLM_DW_INPUT
#undef FASTVLM_DW_WEIGHT
#undef FASTVLM_DW_BIAS
#undef FASTVLM_DW_STORE
#undef FASTVLM_DW_OPERANDS
#undef FASTVLM_DW_STRIP

// 8 lanes; 16 registers: a depthwise strip of 16 - kernel - 1 pixels (8 for 7x7, 12 for 3x3) beside the
// kernel's weight vectors and the input in flight; 4 x 3 dense accumulators with 3 weights and a broadcast.
// A mask is a count of leading lanes: full vectors (every channel count of the tower) take plain loads and
// stores, as AVX2's masked moves are slow (vmaskmovps stores are microcoded on AMD).
struct Lanes {
  using Reg = __m256;
  using Mask = int;
  static constexpr int kWidth = 8;
  static constexpr int kDensePixels = 4, kDenseVectors = 3;
  static constexpr int depthwise_strip(int kernel) { return 16 - kernel - 1; }
  static Mask first(int64_t count) { return int(std::clamp<int64_t>(count, 0, kWidth)); }
  static Mask none() { return 0; }
  static __m256i lane_mask(Mask count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Reg load(const float* p, Mask count) {
    if (count == kWidth) return _mm256_loadu_ps(p);
    return count == 0 ? _mm256_setzero_ps() : _mm256_maskload_ps(p, lane_mask(count));
  }
  // The inputs behind the `outputs` lanes, each twice: i0 i0 i1 i1 i2 i2 i3 i3.
  static Reg load_duplicated(const float* p, Mask outputs) {
    const int inputs = (outputs + 1) / 2;
    const __m128 half = inputs == kWidth / 2 ? _mm_loadu_ps(p)
                        : inputs == 0        ? _mm_setzero_ps()
                                             : _mm_maskload_ps(p, _mm256_castsi256_si128(lane_mask(inputs)));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(half), _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
  }
  static void store(float* p, Mask count, Reg v) {
    if (count == kWidth)
      _mm256_storeu_ps(p, v);
    else if (count > 0)
      _mm256_maskstore_ps(p, lane_mask(count), v);
  }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg broadcast(float x) { return _mm256_set1_ps(x); }
  // A depthwise interior strip in assembly, where one is written for the kernel and strip (see above).
  static bool interior_strip(int kernel, int strip, const float* const* rows, int64_t count, const float* weights,
                             const float* bias, int64_t channels, float* out) {
    if (kernel == 7 && strip == 8)
      depthwise_interior_strip<7>(rows, count, weights, bias, channels, out);
    else if (kernel == 3 && strip == 12)
      depthwise_interior_strip<3>(rows, count, weights, bias, channels, out);
    else
      return false;
    return true;
  }
};
#include "kernels/conv_strips.inc"
FASTVLM_END_TARGET
}  // namespace conv_avx2

void generic_rows_baseline(const ConvParams& conv, const InputRows& input, int64_t in_h, int64_t in_w, float* output,
                           int64_t row_begin, int64_t row_end) {
  generic_conv_rows(conv, input, in_h, in_w, output, row_begin, row_end);
}
ConvRowsKernel kernel_for_scalar(const ConvParams&, int64_t) { return generic_rows_baseline; }

struct ConvOps {
  ConvRowsKernel (*kernel_for)(const ConvParams&, int64_t in_w);
};

const ConvOps& ops() {
  static const ConvOps chosen = kernels::choose<ConvOps>({
      .scalar = {kernel_for_scalar},
      .avx2 = {conv_avx2::kernel_for},
      .avx512 = {conv_avx512::kernel_for},
  });
  return chosen;
}

}  // namespace

int64_t conv_output_size(const ConvParams& conv, int64_t in) {
  return (in + 2 * (conv.kernel / 2) - conv.kernel) / conv.stride + 1;
}

void conv_rows(const ConvParams& conv, const float* input, int64_t in_h, int64_t in_w, float* output_rows,
               int64_t row_begin, int64_t row_end) {
  const InputRows rows{.data = input, .table = nullptr, .row_size = in_w * conv.in_channels};
  ops().kernel_for(conv, in_w)(conv, rows, in_h, in_w, output_rows, row_begin, row_end);
}

void conv_rows(const ConvParams& conv, const float* const* input_rows, int64_t in_h, int64_t in_w,
               float* output_rows, int64_t row_begin, int64_t row_end) {
  const InputRows rows{.data = nullptr, .table = input_rows, .row_size = 0};
  ops().kernel_for(conv, in_w)(conv, rows, in_h, in_w, output_rows, row_begin, row_end);
}

}  // namespace fastvlm
