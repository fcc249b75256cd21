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
// over contiguous output channels. Always inlined into the per-ISA wrappers below, so the compiler
// vectorises the inner loop for each instruction set.
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

FASTVLM_TARGET_AVX512 void generic_conv_rows_avx512(const ConvParams& conv, const InputRows& input, int64_t in_h,
                                                  int64_t in_w, float* output, int64_t row_begin, int64_t row_end) {
  generic_conv_rows(conv, input, in_h, in_w, output, row_begin, row_end);
}

FASTVLM_TARGET_AVX2 void generic_conv_rows_avx2(const ConvParams& conv, const InputRows& input, int64_t in_h,
                                              int64_t in_w, float* output, int64_t row_begin, int64_t row_end) {
  generic_conv_rows(conv, input, in_h, in_w, output, row_begin, row_end);
}

void generic_conv_rows_baseline(const ConvParams& conv, const InputRows& input, int64_t in_h, int64_t in_w,
                                float* output, int64_t row_begin, int64_t row_end) {
  generic_conv_rows(conv, input, in_h, in_w, output, row_begin, row_end);
}

// ---------------------------------------------------------------------------------------------------
// AVX-512 kernels. Each computes a strip of adjacent output pixels of one row with one accumulator
// register per pixel and channel vector, so that an input loaded once feeds every output that sees
// it, and the loop is bound by FMAs rather than loads. Strips whose windows cross the left or right
// edge of the map run the same code without the outside inputs (skipped when the strip is compiled for
// the edge, masked to zero otherwise), so borders cost no more than the interior; rows outside the map
// are skipped through TapRange.

// Whether input column `x` lies inside a row of `width`.
inline bool inside(int64_t x, int64_t width) { return uint64_t(x) < uint64_t(width); }

// Input vector `i` of a depthwise strip: 16 consecutive channels of one input pixel (Multiplier 1), or
// 8 channels each duplicated, i0 i0 i1 i1 ... i7 i7 (Multiplier 2: output channel o reads input o / 2).
// A zero mask reads nothing, so `src` may then be any mapped address.
template <int Multiplier>
FASTVLM_TARGET_AVX512 inline __m512 load_inputs(const float* src, __mmask16 mask) {
  if constexpr (Multiplier == 1) {
    return _mm512_maskz_loadu_ps(mask, src);
  } else {
    const __m512i duplicate = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    return _mm512_permutexvar_ps(duplicate, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(__mmask8(mask), src)));
  }
}

// Strip pixels per depthwise call: Strip accumulators + Kernel weight vectors + the input in flight
// fit the 32 vector registers.
constexpr int kDepthwiseStrip = 16;

// Which of a depthwise strip's inputs lie outside the row: the first `left` and the last `right` (known
// when the strip is compiled, so they cost nothing), or, with `any`, whichever are found at run time.
struct StripClip {
  int left = 0, right = 0;
  bool any = false;
};

// Depthwise (Multiplier 1) or channel-multiplier-2 convolution (groups = in_channels) of output pixels
// [ox0, ox0 + Strip) of the row whose window rows are `ys`, output channels [c0, c0 + 16) with `tail`
// masking the last ones. The Kernel weight vectors of a kernel row stay in registers while the
// strip's (Strip - 1) * Stride + Kernel input vectors of that row stream past them.
template <int Kernel, int Stride, int Multiplier, int Strip, StripClip Clip>
FASTVLM_TARGET_AVX512 void depthwise_strip(const ConvParams& conv, const InputRows& input, int64_t in_w,
                                           const TapRange& ys, int64_t ox0, int64_t c0, __mmask16 tail,
                                           float* row_output) {
  constexpr int kInputs = (Strip - 1) * Stride + Kernel;
  const int64_t out_c = conv.out_channels, in_c = conv.in_channels;
  // The inputs behind the `tail` outputs: all 16 lanes, or ceil(outputs / 2) of 8 for Multiplier 2.
  const __mmask16 input_mask =
      Multiplier == 1 ? tail : simd::first_lanes((__builtin_popcount(tail) + 1) / 2);
  const int64_t x_origin = ox0 * Stride - Kernel / 2;
  __m512 acc[Strip];
  const __m512 bias = _mm512_maskz_loadu_ps(tail, conv.bias + c0);
#pragma GCC unroll 64
  for (int j = 0; j < Strip; ++j) acc[j] = bias;
  for (int ky = ys.begin; ky < ys.end; ++ky) {
    __m512 w[Kernel];
#pragma GCC unroll 8
    for (int kx = 0; kx < Kernel; ++kx)
      w[kx] = _mm512_maskz_loadu_ps(tail, conv.weight + (ky * Kernel + kx) * out_c + c0);
    const float* row = input[ys.origin + ky] + c0 / Multiplier;
    const float* src = row + x_origin * in_c;  // input i of the strip, for i = 0, 1, ...
    // Fully unrolled, so that acc[] and w[] live in registers and the tap tests fold away.
#pragma GCC unroll 64
    for (int i = 0; i < kInputs; ++i, src += in_c) {
      if (i < Clip.left || i >= kInputs - Clip.right) continue;
      // Inputs found outside the row at run time are read as zeros, from the row's first pixel.
      const bool valid = !Clip.any || inside(x_origin + i, in_w);
      const __m512 value = load_inputs<Multiplier>(valid ? src : row, valid ? input_mask : 0);
#pragma GCC unroll 8
      for (int kx = 0; kx < Kernel; ++kx) {
        const int j = (i - kx) / Stride;  // the output pixel that sees input i through tap kx, if any
        if (i >= kx && (i - kx) % Stride == 0 && j < Strip) acc[j] = _mm512_fmadd_ps(w[kx], value, acc[j]);
      }
    }
  }
#pragma GCC unroll 64
  for (int j = 0; j < Strip; ++j) _mm512_mask_storeu_ps(row_output + (ox0 + j) * out_c + c0, tail, acc[j]);
}

// Rows [row_begin, row_end) of a depthwise or multiplier-2 convolution: strips of kDepthwiseStrip
// pixels (the last one overlapping its neighbour when the width is not a multiple of it, single pixels
// for rows narrower than a strip), each through all channel blocks before the next.
template <int Kernel, int Stride, int Multiplier>
FASTVLM_TARGET_AVX512 void depthwise_rows_avx512(const ConvParams& conv, const InputRows& input, int64_t in_h,
                                                 int64_t in_w, float* output, int64_t row_begin, int64_t row_end) {
  constexpr int kPad = Kernel / 2;
  const int64_t out_w = conv_output_size(conv, in_w), out_c = conv.out_channels;
  const auto strip_through_channels = [&]<int Strip, StripClip Clip>(const TapRange& ys, int64_t ox, float* row_output) {
    for (int64_t c0 = 0; c0 < out_c; c0 += 16) {
      const __mmask16 tail = simd::first_lanes(out_c - c0);
      depthwise_strip<Kernel, Stride, Multiplier, Strip, Clip>(conv, input, in_w, ys, ox, c0, tail, row_output);
    }
  };
  // The inputs a full strip has outside the row at the left edge (ox = 0) and at the right edge when
  // the strip ends the row and in_w = Stride * out_w (every map of the tower).
  constexpr int kInputs = (kDepthwiseStrip - 1) * Stride + Kernel;
  constexpr int kLeft = kPad, kRight = std::max(0, Kernel - kPad - Stride);
  constexpr StripClip kAtRuntime{.any = true};
  for (int64_t oy = row_begin; oy < row_end; ++oy) {
    const TapRange ys = tap_range(oy, Stride, Kernel, in_h);
    float* row_output = output + (oy - row_begin) * out_w * out_c;
    if (out_w < kDepthwiseStrip) {
      for (int64_t ox = 0; ox < out_w; ++ox) strip_through_channels.template operator()<1, kAtRuntime>(ys, ox, row_output);
      continue;
    }
    for (int64_t x = 0; x < out_w; x += kDepthwiseStrip) {
      const int64_t ox = std::min(x, out_w - kDepthwiseStrip);
      const int64_t x_origin = ox * Stride - kPad;
      const int64_t left = std::max<int64_t>(0, -x_origin), right = std::max<int64_t>(0, x_origin + kInputs - in_w);
      if (left == 0 && right == 0)
        strip_through_channels.template operator()<kDepthwiseStrip, StripClip{}>(ys, ox, row_output);
      else if (left == kLeft && right == 0)
        strip_through_channels.template operator()<kDepthwiseStrip, StripClip{.left = kLeft}>(ys, ox, row_output);
      else if (left == 0 && right == kRight)
        strip_through_channels.template operator()<kDepthwiseStrip, StripClip{.right = kRight}>(ys, ox, row_output);
      else if (left == kLeft && right == kRight)
        strip_through_channels.template operator()<kDepthwiseStrip, StripClip{kLeft, kRight}>(ys, ox, row_output);
      else
        strip_through_channels.template operator()<kDepthwiseStrip, kAtRuntime>(ys, ox, row_output);
    }
  }
}

// Output pixels per dense-convolution block and output-channel vectors per block: 24 accumulators, 3
// weight vectors and the broadcast input fit the 32 vector registers.
constexpr int kDensePixels = 8;
constexpr int kDenseVectors = 3;

// A dense (groups = 1) convolution of output pixels [ox0, ox0 + kDensePixels) of the row whose window
// rows are `ys`, output channels [c0, c0 + 16 * kDenseVectors) clipped to the channel count.
// Every input value is broadcast against the weight vectors of its tap and channel, which stay loaded
// across the block's pixels: a direct convolution shaped like a small GEMM (the stem's 3 -> 96 conv
// has 27 inputs per pixel).
template <bool Clipped>
FASTVLM_TARGET_AVX512 void dense_block(const ConvParams& conv, const InputRows& input, int64_t in_w, const TapRange& ys,
                                int64_t ox0, int64_t c0, float* row_output) {
  const int64_t out_c = conv.out_channels, in_c = conv.in_channels, kernel = conv.kernel;
  // The channels of vector v that exist (none past the last channel: then it reads and writes nothing).
  const auto vector_mask = [left = out_c - c0](int v) { return simd::first_lanes(left - 16 * v); };
  __m512 acc[kDensePixels][kDenseVectors];
#pragma GCC unroll 8
  for (int v = 0; v < kDenseVectors; ++v) {
    const __m512 bias = _mm512_maskz_loadu_ps(vector_mask(v), conv.bias + c0 + 16 * v);
#pragma GCC unroll 8
    for (int p = 0; p < kDensePixels; ++p) acc[p][v] = bias;
  }
  for (int ky = ys.begin; ky < ys.end; ++ky)
    for (int kx = 0; kx < kernel; ++kx) {
      const float* row = input[ys.origin + ky];
      const int64_t x0 = ox0 * conv.stride - kernel / 2 + kx;  // input column of pixel 0 through this tap
      const float* tap_weight = conv.weight + (ky * kernel + kx) * in_c * out_c + c0;
      for (int64_t ci = 0; ci < in_c; ++ci) {
        __m512 w[kDenseVectors];
#pragma GCC unroll 8
        for (int v = 0; v < kDenseVectors; ++v)
          w[v] = _mm512_maskz_loadu_ps(vector_mask(v), tap_weight + ci * out_c + 16 * v);
#pragma GCC unroll 8
        for (int p = 0; p < kDensePixels; ++p) {
          const int64_t x = x0 + p * conv.stride;
          const __m512 broadcast = _mm512_set1_ps(!Clipped || inside(x, in_w) ? row[x * in_c + ci] : 0.0f);
#pragma GCC unroll 8
          for (int v = 0; v < kDenseVectors; ++v) acc[p][v] = _mm512_fmadd_ps(w[v], broadcast, acc[p][v]);
        }
      }
    }
#pragma GCC unroll 8
  for (int p = 0; p < kDensePixels; ++p)
#pragma GCC unroll 8
    for (int v = 0; v < kDenseVectors; ++v)
      _mm512_mask_storeu_ps(row_output + (ox0 + p) * out_c + c0 + 16 * v, vector_mask(v), acc[p][v]);
}

// Rows [row_begin, row_end) of a dense convolution with at least kDensePixels output columns, in
// blocks of kDensePixels pixels (the last overlapping its neighbour) by 16 * kDenseVectors channels.
FASTVLM_TARGET_AVX512 void dense_rows_avx512(const ConvParams& conv, const InputRows& input, int64_t in_h, int64_t in_w,
                                      float* output, int64_t row_begin, int64_t row_end) {
  const int64_t out_w = conv_output_size(conv, in_w), out_c = conv.out_channels, pad = conv.kernel / 2;
  const auto fits = [&](int64_t ox, int64_t count) {
    return ox * conv.stride - pad >= 0 && (ox + count - 1) * conv.stride - pad + conv.kernel <= in_w;
  };
  const int64_t block_channels = 16 * kDenseVectors;
  for (int64_t oy = row_begin; oy < row_end; ++oy) {
    const TapRange ys = tap_range(oy, conv.stride, conv.kernel, in_h);
    float* row_output = output + (oy - row_begin) * out_w * out_c;
    for (int64_t c0 = 0; c0 < out_c; c0 += block_channels)
      for (int64_t x = 0; x < out_w; x += kDensePixels) {
        const int64_t ox = std::min(x, out_w - kDensePixels);
        if (fits(ox, kDensePixels))
          dense_block<false>(conv, input, in_w, ys, ox, c0, row_output);
        else
          dense_block<true>(conv, input, in_w, ys, ox, c0, row_output);
      }
  }
}

// The kernel for `conv` at each level: at AVX-512 a hand-written one for the shapes it covers.
using ConvRowsKernel = void (*)(const ConvParams&, const InputRows&, int64_t, int64_t, float*, int64_t, int64_t);

ConvRowsKernel kernel_for_avx512(const ConvParams& conv, int64_t in_w) {
  if (conv.groups == 1 && conv_output_size(conv, in_w) >= kDensePixels) return dense_rows_avx512;
  if (conv.groups != conv.in_channels) return generic_conv_rows_avx512;
  const int multiplier = conv.out_channels / conv.in_channels;
  const int shape[] = {conv.kernel, conv.stride, multiplier};
  const auto is = [&shape](int kernel, int stride, int mult) {
    return shape[0] == kernel && shape[1] == stride && shape[2] == mult;
  };
  if (is(7, 1, 1)) return depthwise_rows_avx512<7, 1, 1>;
  if (is(3, 1, 1)) return depthwise_rows_avx512<3, 1, 1>;
  if (is(3, 2, 1)) return depthwise_rows_avx512<3, 2, 1>;
  if (is(7, 2, 2)) return depthwise_rows_avx512<7, 2, 2>;
  if (is(3, 1, 2)) return depthwise_rows_avx512<3, 1, 2>;
  return generic_conv_rows_avx512;
}

ConvRowsKernel kernel_for_avx2(const ConvParams&, int64_t) { return generic_conv_rows_avx2; }
ConvRowsKernel kernel_for_scalar(const ConvParams&, int64_t) { return generic_conv_rows_baseline; }

struct ConvOps {
  ConvRowsKernel (*kernel_for)(const ConvParams&, int64_t in_w);
};

const ConvOps& ops() {
  static const ConvOps chosen = kernels::choose<ConvOps>({
      .scalar = {kernel_for_scalar},
      .avx2 = {kernel_for_avx2},
      .avx512 = {kernel_for_avx512},
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
