#include "vision/conv_kernels.h"

#include <immintrin.h>

// GCC 12's AVX-512 headers build unmasked results from _mm512_undefined_ps(), which -O3 reports as
// "may be used uninitialized" once inlined; the lanes are all written.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>

#include "vision/fastvit.h"

namespace fastvlm {
namespace {

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
[[gnu::always_inline]] inline void generic_conv_rows(const GroupedConv& conv, const float* __restrict input,
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
      std::copy(conv.bias.data(), conv.bias.data() + out_c, dst);
      for (int ky = ys.begin; ky < ys.end; ++ky)
        for (int kx = xs.begin; kx < xs.end; ++kx) {
          const float* __restrict src = input + ((ys.origin + ky) * in_w + xs.origin + kx) * in_c;
          const float* __restrict tap_weight = conv.weight.data() + (ky * conv.kernel + kx) * tap_stride;
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

__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))) void generic_conv_rows_avx512(
    const GroupedConv& conv, const float* input, int64_t in_h, int64_t in_w, float* output, int64_t row_begin,
    int64_t row_end) {
  generic_conv_rows(conv, input, in_h, in_w, output, row_begin, row_end);
}

__attribute__((target("avx2,fma"))) void generic_conv_rows_avx2(const GroupedConv& conv, const float* input,
                                                                int64_t in_h, int64_t in_w, float* output,
                                                                int64_t row_begin, int64_t row_end) {
  generic_conv_rows(conv, input, in_h, in_w, output, row_begin, row_end);
}

void generic_conv_rows_baseline(const GroupedConv& conv, const float* input, int64_t in_h, int64_t in_w,
                                float* output, int64_t row_begin, int64_t row_end) {
  generic_conv_rows(conv, input, in_h, in_w, output, row_begin, row_end);
}

// ---------------------------------------------------------------------------------------------------
// AVX-512 depthwise (Multiplier 1) and channel-multiplier-2 convolutions (groups = in_channels): output
// channel o reads input channel o / Multiplier, so 16 output channels read 16 / Multiplier inputs.

template <int Multiplier>
__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) inline __m512 load_inputs(const float* src, __mmask16 mask) {
  if constexpr (Multiplier == 1) {
    return _mm512_maskz_loadu_ps(mask, src);
  } else {
    // Inputs i0..i7 become i0 i0 i1 i1 ... i7 i7; `mask` covers the low outputs, so the low
    // ceil(outputs / 2) inputs are needed.
    const __m512i duplicate = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __mmask8 half = __mmask8((1u << ((__builtin_popcount(mask) + 1) / 2)) - 1);
    return _mm512_permutexvar_ps(duplicate, _mm512_castps256_ps512(_mm256_maskz_loadu_ps(half, src)));
  }
}

// Channels are processed in blocks of kBlock vectors so that each tap's loads feed kBlock independent
// accumulation chains.
constexpr int kBlock = 4;

// One output pixel, output channels [c0, c0 + 16·vectors), the last vector masked by `tail`.
template <int Multiplier, int Vectors>
__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) inline void depthwise_pixel_block(
    const GroupedConv& conv, const float* input, int64_t in_w, const TapRange& ys, const TapRange& xs, int64_t c0,
    __mmask16 tail, float* dst) {
  const int64_t out_c = conv.out_channels, in_c = conv.in_channels;
  __m512 acc[Vectors];
  for (int v = 0; v < Vectors; ++v) {
    const __mmask16 mask = v == Vectors - 1 ? tail : __mmask16(0xffff);
    acc[v] = _mm512_maskz_loadu_ps(mask, conv.bias.data() + c0 + 16 * v);
  }
  for (int ky = ys.begin; ky < ys.end; ++ky)
    for (int kx = xs.begin; kx < xs.end; ++kx) {
      const float* src = input + ((ys.origin + ky) * in_w + xs.origin + kx) * in_c + c0 / Multiplier;
      const float* w = conv.weight.data() + (ky * conv.kernel + kx) * out_c + c0;
      for (int v = 0; v < Vectors; ++v) {
        const __mmask16 mask = v == Vectors - 1 ? tail : __mmask16(0xffff);
        acc[v] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, w + 16 * v),
                                 load_inputs<Multiplier>(src + 16 / Multiplier * v, mask), acc[v]);
      }
    }
  for (int v = 0; v < Vectors; ++v) {
    const __mmask16 mask = v == Vectors - 1 ? tail : __mmask16(0xffff);
    _mm512_mask_storeu_ps(dst + c0 + 16 * v, mask, acc[v]);
  }
}

// Stride-1 depthwise convolution of `Strip` adjacent output pixels of one row, 16 channels from c0
// (`tail` masking the last ones): each input vector loaded feeds up to Kernel accumulators, and the
// Kernel weight vectors of a kernel row stay in registers, so the loop is bound by FMAs, not loads.
// The strip's windows must lie inside the map horizontally (rows may be clipped); dst is its first pixel.
template <int Kernel, int Strip>
__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) inline void depthwise_strip(
    const GroupedConv& conv, const float* input, int64_t in_w, const TapRange& ys, int64_t ox0, int64_t c0,
    __mmask16 tail, float* dst) {
  const int64_t channels = conv.out_channels;
  __m512 acc[Strip];
  const __m512 bias = _mm512_maskz_loadu_ps(tail, conv.bias.data() + c0);
#pragma GCC unroll 16
  for (int j = 0; j < Strip; ++j) acc[j] = bias;
  const int64_t x_origin = ox0 - Kernel / 2;
  for (int ky = ys.begin; ky < ys.end; ++ky) {
    __m512 w[Kernel];
#pragma GCC unroll 8
    for (int kx = 0; kx < Kernel; ++kx)
      w[kx] = _mm512_maskz_loadu_ps(tail, conv.weight.data() + (ky * Kernel + kx) * channels + c0);
    const float* row = input + ((ys.origin + ky) * in_w + x_origin) * channels + c0;
    // Fully unrolled, so that acc[] and w[] live in registers.
#pragma GCC unroll 32
    for (int i = 0; i < Strip + Kernel - 1; ++i) {
      const __m512 value = _mm512_maskz_loadu_ps(tail, row + i * channels);
#pragma GCC unroll 8
      for (int kx = 0; kx < Kernel; ++kx) {
        const int j = i - kx;  // the output pixel that sees input i through tap kx
        if (j >= 0 && j < Strip) acc[j] = _mm512_fmadd_ps(w[kx], value, acc[j]);
      }
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < Strip; ++j) _mm512_mask_storeu_ps(dst + j * channels + c0, tail, acc[j]);
}

// Output pixels [ox_begin, ox_end) of row oy, one pixel at a time (any stride, windows may be clipped).
template <int Multiplier>
__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void depthwise_pixels_avx512(
    const GroupedConv& conv, const float* input, int64_t in_w, const TapRange& ys, int64_t ox_begin, int64_t ox_end,
    float* row_output) {
  const int64_t out_c = conv.out_channels;
  const int64_t full_blocks = out_c / (16 * kBlock);
  for (int64_t ox = ox_begin; ox < ox_end; ++ox) {
    const TapRange xs = tap_range(ox, conv.stride, conv.kernel, in_w);
    float* dst = row_output + ox * out_c;
    for (int64_t block = 0; block < full_blocks; ++block)
      depthwise_pixel_block<Multiplier, kBlock>(conv, input, in_w, ys, xs, block * 16 * kBlock, 0xffff, dst);
    for (int64_t c0 = full_blocks * 16 * kBlock; c0 < out_c; c0 += 16) {
      const int64_t left = std::min<int64_t>(16, out_c - c0);
      depthwise_pixel_block<Multiplier, 1>(conv, input, in_w, ys, xs, c0, __mmask16((1u << left) - 1), dst);
    }
  }
}

// Stride-1 depthwise rows: strips of 16 and then 8 pixels where the windows fit, single pixels at the
// borders and for what is left.
template <int Kernel>
__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void depthwise_stride1_rows_avx512(
    const GroupedConv& conv, const float* input, int64_t in_h, int64_t in_w, float* output, int64_t row_begin,
    int64_t row_end) {
  constexpr int kPad = Kernel / 2;
  const int64_t channels = conv.out_channels, out_w = in_w;
  const int64_t interior_end = out_w - kPad;  // first column whose window crosses the right edge
  for (int64_t oy = row_begin; oy < row_end; ++oy) {
    const TapRange ys = tap_range(oy, 1, Kernel, in_h);
    float* row_output = output + (oy - row_begin) * out_w * channels;
    const int64_t left_end = std::min<int64_t>(kPad, out_w);
    depthwise_pixels_avx512<1>(conv, input, in_w, ys, 0, left_end, row_output);
    int64_t ox = left_end;
    for (int64_t c0 = 0; c0 < channels; c0 += 16) {
      const __mmask16 tail = __mmask16((1u << std::min<int64_t>(16, channels - c0)) - 1);
      int64_t x = left_end;
      for (; x + 16 <= interior_end; x += 16) depthwise_strip<Kernel, 16>(conv, input, in_w, ys, x, c0, tail, row_output + x * channels);
      for (; x + 8 <= interior_end; x += 8) depthwise_strip<Kernel, 8>(conv, input, in_w, ys, x, c0, tail, row_output + x * channels);
      ox = x;
    }
    depthwise_pixels_avx512<1>(conv, input, in_w, ys, std::max(ox, left_end), out_w, row_output);
  }
}

template <int Multiplier>
__attribute__((target("avx512f,avx512bw,avx512vl,fma"))) void depthwise_conv_rows_avx512(
    const GroupedConv& conv, const float* input, int64_t in_h, int64_t in_w, float* output, int64_t row_begin,
    int64_t row_end) {
  const int64_t out_w = conv_output_size(conv, in_w), out_c = conv.out_channels;
  for (int64_t oy = row_begin; oy < row_end; ++oy) {
    const TapRange ys = tap_range(oy, conv.stride, conv.kernel, in_h);
    depthwise_pixels_avx512<Multiplier>(conv, input, in_w, ys, 0, out_w, output + (oy - row_begin) * out_w * out_c);
  }
}

}  // namespace

int64_t conv_output_size(const GroupedConv& conv, int64_t in) {
  return (in + 2 * (conv.kernel / 2) - conv.kernel) / conv.stride + 1;
}

void conv_rows(const GroupedConv& conv, const float* input, int64_t in_h, int64_t in_w, float* output_rows,
               int64_t row_begin, int64_t row_end, Isa isa) {
  const bool one_input_per_group = conv.groups == conv.in_channels;
  const int multiplier = conv.out_channels / conv.in_channels;
  if (isa >= Isa::Avx512 && one_input_per_group && multiplier == 1 && conv.stride == 1 && conv.kernel == 7)
    return depthwise_stride1_rows_avx512<7>(conv, input, in_h, in_w, output_rows, row_begin, row_end);
  if (isa >= Isa::Avx512 && one_input_per_group && multiplier == 1 && conv.stride == 1 && conv.kernel == 3)
    return depthwise_stride1_rows_avx512<3>(conv, input, in_h, in_w, output_rows, row_begin, row_end);
  if (isa >= Isa::Avx512 && one_input_per_group && multiplier == 1)
    return depthwise_conv_rows_avx512<1>(conv, input, in_h, in_w, output_rows, row_begin, row_end);
  if (isa >= Isa::Avx512 && one_input_per_group && multiplier == 2)
    return depthwise_conv_rows_avx512<2>(conv, input, in_h, in_w, output_rows, row_begin, row_end);
  if (isa >= Isa::Avx512) return generic_conv_rows_avx512(conv, input, in_h, in_w, output_rows, row_begin, row_end);
  if (isa >= Isa::Avx2) return generic_conv_rows_avx2(conv, input, in_h, in_w, output_rows, row_begin, row_end);
  generic_conv_rows_baseline(conv, input, in_h, in_w, output_rows, row_begin, row_end);
}

}  // namespace fastvlm
