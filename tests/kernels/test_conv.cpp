// The spatial convolution kernels (conv_rows) at every kernel level this CPU has (the lower ones in child
// runs), against a direct evaluation of the convolution's definition (zero padding of kernel / 2, output
// channel o of group g reading input channels [g, g + 1) * in_per_group), written here independently of
// the kernels. The
// shapes are the tower's kinds (depthwise 7x7 and 3x3, stride-2 depthwise, stride-2 multiplier-2, the
// dense stem conv) at awkward sizes: widths that are not a multiple of a strip, channel counts that are
// not a multiple of 16, maps smaller than a kernel, and row ranges that start inside the map.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/cpu.h"
#include "core/tensor.h"
#include "kernel_levels.h"
#include "kernels/conv.h"

namespace fastvlm {
namespace {

struct ConvCase {
  int64_t in_h, in_w;
  int in_channels, out_channels, groups, kernel, stride;
};

std::string describe(const ConvCase& c) {
  return std::to_string(c.in_h) + "x" + std::to_string(c.in_w) + "x" + std::to_string(c.in_channels) + " -> " +
         std::to_string(c.out_channels) + " groups " + std::to_string(c.groups) + " kernel " +
         std::to_string(c.kernel) + " stride " + std::to_string(c.stride);
}

// Deterministic values in [-1, 1) that differ from element to element.
void fill(Tensor& tensor, uint32_t seed) {
  uint32_t state = seed * 2654435761u + 12345u;
  for (int64_t i = 0; i < tensor.numel(); ++i) {
    state = state * 1664525u + 1013904223u;
    tensor.data()[i] = float(state >> 8) / float(1u << 23) - 1.0f;
  }
}

// A convolution's seeded weights and the kernel's view of them.
struct SeededConv {
  Tensor weight, bias;
  ConvParams params;
};

SeededConv make_conv(const ConvCase& c) {
  SeededConv conv{Tensor({int64_t(c.kernel) * c.kernel, c.in_channels / c.groups, c.out_channels}),
                  Tensor({c.out_channels}), {}};
  fill(conv.weight, 1);
  fill(conv.bias, 2);
  conv.params = {.in_channels = c.in_channels, .out_channels = c.out_channels, .kernel = c.kernel,
                 .stride = c.stride, .groups = c.groups, .weight = conv.weight.data(), .bias = conv.bias.data()};
  return conv;
}

// The convolution by its definition, in double precision: out[y][x][o] = bias[o] + sum over taps inside
// the map and the group's input channels of in[y*s + ky - k/2][x*s + kx - k/2][i] * w[tap][i - group start][o].
std::vector<double> reference_conv(const ConvParams& conv, const Tensor& input, int64_t in_h, int64_t in_w) {
  const int64_t pad = conv.kernel / 2;
  const int64_t out_h = (in_h + 2 * pad - conv.kernel) / conv.stride + 1;
  const int64_t out_w = (in_w + 2 * pad - conv.kernel) / conv.stride + 1;
  const int64_t in_per_group = conv.in_channels / conv.groups, out_per_group = conv.out_channels / conv.groups;
  std::vector<double> out(size_t(out_h * out_w * conv.out_channels));
  for (int64_t y = 0; y < out_h; ++y)
    for (int64_t x = 0; x < out_w; ++x)
      for (int64_t o = 0; o < conv.out_channels; ++o) {
        const int64_t first_input = (o / out_per_group) * in_per_group;
        double sum = conv.bias[o];
        for (int64_t ky = 0; ky < conv.kernel; ++ky)
          for (int64_t kx = 0; kx < conv.kernel; ++kx) {
            const int64_t iy = y * conv.stride + ky - pad, ix = x * conv.stride + kx - pad;
            if (iy < 0 || iy >= in_h || ix < 0 || ix >= in_w) continue;
            for (int64_t i = 0; i < in_per_group; ++i) {
              const double value = input.data()[(iy * in_w + ix) * conv.in_channels + first_input + i];
              const double weight =
                  conv.weight[((ky * conv.kernel + kx) * in_per_group + i) * conv.out_channels + o];
              sum += value * weight;
            }
          }
        out[size_t((y * out_w + x) * conv.out_channels + o)] = sum;
      }
  return out;
}

// How the kernel finds the input's rows: one contiguous map, or a table of rows stored apart, last row
// first (conv_rows' row-table form, as a ring of rows has them).
enum class RowLayout { Contiguous, Table };

// Runs `c` at the active kernel level, the rows in chunks of `rows_per_call` (the last call takes what is
// left), and compares every output element with the reference.
void expect_matches_reference(const ConvCase& c, int64_t rows_per_call = 1, RowLayout layout = RowLayout::Contiguous) {
  const SeededConv seeded = make_conv(c);
  const ConvParams& conv = seeded.params;
  Tensor input({c.in_h, c.in_w, c.in_channels});
  fill(input, 3);
  const std::vector<double> expected = reference_conv(conv, input, c.in_h, c.in_w);
  const int64_t out_h = conv_output_size(conv, c.in_h), out_w = conv_output_size(conv, c.in_w);
  ASSERT_EQ(int64_t(expected.size()), out_h * out_w * c.out_channels) << describe(c);
  // Each output sums at most kernel² · in_per_group products of values below 1 in magnitude.
  const double tolerance = 1e-6 * double(c.kernel * c.kernel * (c.in_channels / c.groups) + 1);
  std::vector<float> output(expected.size(), std::nanf(""));
  // Table layout: row y at slot in_h - 1 - y of a buffer with a NaN row between slots, so that a kernel
  // reading past a row's ends, or a row as if the map were contiguous, fails.
  const int64_t row_size = c.in_w * c.in_channels;
  std::vector<float> apart(size_t(2 * c.in_h * row_size), std::nanf(""));
  std::vector<const float*> table(size_t(c.in_h));
  for (int64_t y = 0; y < c.in_h; ++y) {
    float* slot = apart.data() + 2 * (c.in_h - 1 - y) * row_size;
    std::copy(input.data() + y * row_size, input.data() + (y + 1) * row_size, slot);
    table[size_t(y)] = slot;
  }
  for (int64_t row = 0; row < out_h; row += rows_per_call) {
    const int64_t end = std::min(out_h, row + rows_per_call);
    float* rows_output = output.data() + row * out_w * c.out_channels;
    if (layout == RowLayout::Table)
      conv_rows(conv, table.data(), c.in_h, c.in_w, rows_output, row, end);
    else
      conv_rows(conv, input.data(), c.in_h, c.in_w, rows_output, row, end);
  }
  int64_t mismatches = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (std::abs(double(output[i]) - expected[i]) <= tolerance) continue;  // NaN (unwritten) fails too
    if (++mismatches <= 3) {
      const int64_t pixel = int64_t(i) / c.out_channels;
      ADD_FAILURE() << describe(c) << " at " << isa_name(active_isa()) << ": output (" << pixel / out_w << ", "
                    << pixel % out_w << ", channel " << int64_t(i) % c.out_channels << ") is " << output[i]
                    << ", expected " << expected[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << describe(c) << " at " << isa_name(active_isa());
}

ConvCase depthwise(int64_t h, int64_t w, int channels, int kernel, int stride = 1, int multiplier = 1) {
  return {h, w, channels, channels * multiplier, channels, kernel, stride};
}

TEST(ConvKernels, Depthwise7x7) {
  expect_matches_reference(depthwise(5, 37, 20, 7));    // 16-pixel strips and an overlapping last one
  expect_matches_reference(depthwise(4, 16, 16, 7));    // one strip, clipped on both sides
  expect_matches_reference(depthwise(9, 40, 96, 7));    // the tower's channel count
  expect_matches_reference(depthwise(3, 9, 33, 7));     // narrower than a strip
  expect_matches_reference(depthwise(2, 3, 5, 7));      // map smaller than the kernel
  expect_matches_reference(depthwise(1, 1, 1, 7));
  expect_matches_reference(depthwise(8, 70, 48, 7));    // interior strips between clipped ones
  expect_matches_reference(depthwise(4, 8, 16, 7));     // one 8-pixel strip (AVX2), clipped on both sides
  expect_matches_reference(depthwise(3, 7, 40, 7));     // narrower than an AVX2 strip
}

TEST(ConvKernels, Depthwise3x3) {
  expect_matches_reference(depthwise(7, 50, 17, 3));
  expect_matches_reference(depthwise(4, 24, 40, 3));
  expect_matches_reference(depthwise(6, 61, 32, 3));
  expect_matches_reference(depthwise(1, 2, 5, 3));
  expect_matches_reference(depthwise(5, 12, 24, 3));    // one 12-pixel strip (AVX2, 3x3)
  expect_matches_reference(depthwise(3, 11, 8, 3));     // narrower than it
}

TEST(ConvKernels, DepthwiseStride2) {
  expect_matches_reference(depthwise(9, 41, 24, 3, 2));  // the stem's 3x3 stride-2 depthwise conv
  expect_matches_reference(depthwise(8, 64, 96, 3, 2));
  expect_matches_reference(depthwise(4, 33, 3, 3, 2));
  expect_matches_reference(depthwise(2, 2, 16, 3, 2));
}

TEST(ConvKernels, ChannelMultiplier2) {
  expect_matches_reference(depthwise(9, 45, 12, 7, 2, 2));   // PatchEmbed: 7x7 stride 2, out = 2 x in
  expect_matches_reference(depthwise(10, 64, 48, 7, 2, 2));
  expect_matches_reference(depthwise(6, 31, 7, 7, 2, 2));    // 14 output channels: a partial vector
  expect_matches_reference(depthwise(3, 3, 8, 7, 2, 2));
  expect_matches_reference(depthwise(5, 19, 9, 3, 1, 2));    // conv_exp: 3x3 stride 1, out = 2 x in
  expect_matches_reference(depthwise(4, 20, 24, 3, 1, 2));
}

TEST(ConvKernels, DenseConvolution) {
  expect_matches_reference({11, 37, 3, 96, 1, 3, 2});  // the stem's first conv, 3 -> 96
  expect_matches_reference({8, 64, 3, 96, 1, 3, 2});
  expect_matches_reference({7, 30, 3, 20, 1, 3, 2});   // a partial channel vector
  expect_matches_reference({6, 21, 4, 33, 1, 3, 1});
  expect_matches_reference({5, 18, 5, 50, 1, 5, 1});
  expect_matches_reference({3, 5, 3, 96, 1, 3, 2});    // fewer output columns than a block
}

TEST(ConvKernels, OtherGroupings) {
  expect_matches_reference({6, 19, 8, 12, 2, 3, 1});   // two groups of 4 inputs -> 6 outputs
  expect_matches_reference({5, 17, 10, 10, 10, 5, 1}); // a depthwise kernel size with no dedicated kernel
}

TEST(ConvKernels, SeveralRowsPerCall) {
  expect_matches_reference(depthwise(9, 37, 20, 7), 4);
  expect_matches_reference(depthwise(7, 50, 17, 3), 3);
  expect_matches_reference(depthwise(9, 45, 12, 7, 2, 2), 2);
  expect_matches_reference({11, 37, 3, 96, 1, 3, 2}, 5);
}

TEST(ConvKernels, RowsFromATable) {
  expect_matches_reference(depthwise(9, 37, 20, 7), 1, RowLayout::Table);      // the ConvFFN's 7x7
  expect_matches_reference(depthwise(5, 9, 96, 7), 2, RowLayout::Table);       // narrower than a strip
  expect_matches_reference(depthwise(7, 50, 17, 3), 3, RowLayout::Table);      // the RepMixer's 3x3
  expect_matches_reference(depthwise(9, 45, 12, 7, 2, 2), 1, RowLayout::Table);
  expect_matches_reference({11, 37, 3, 96, 1, 3, 2}, 1, RowLayout::Table);     // dense
  expect_matches_reference({6, 19, 8, 12, 2, 3, 1}, 2, RowLayout::Table);      // generic loop nest
}

TEST(KernelLevels, LowerLevelsPass) { test_support::expect_lower_kernel_levels_pass(); }

}  // namespace
}  // namespace fastvlm
