#pragma once
// The spatial convolutions of the vision tower on channels-last [H, W, C] float32 maps: hand-written
// kernels for dense, depthwise and channel-multiplier-2 convolutions (every spatial conv of FastViTHD),
// written once and compiled for AVX-512 and AVX2, and one generic loop nest compiled for AVX-512, AVX2 and
// the baseline for everything else.
#include <cstdint>

namespace fastvlm {

// A grouped convolution with a square kernel, zero padding kernel / 2 on every side and the given stride.
struct ConvParams {
  int in_channels = 0;
  int out_channels = 0;
  int kernel = 1;
  int stride = 1;
  int groups = 1;
  const float* weight = nullptr;  // [kernel * kernel, in_channels / groups, out_channels]: output channels innermost
  const float* bias = nullptr;    // [out_channels]
};

// Writes output rows [row_begin, row_end) of `conv` applied to `input` ([in_h, in_w, in_channels]) to
// `output_rows` (those rows only, [row_end - row_begin, out_w, out_channels]), bias included. Runs on the
// calling thread.
void conv_rows(const ConvParams& conv, const float* input, int64_t in_h, int64_t in_w, float* output_rows,
               int64_t row_begin, int64_t row_end);
// The same on an input map whose rows lie anywhere (a ring of recently computed rows): row y, of in_w
// pixels, starts at input_rows[y]. Only the rows the output rows' windows read need be valid.
void conv_rows(const ConvParams& conv, const float* const* input_rows, int64_t in_h, int64_t in_w,
               float* output_rows, int64_t row_begin, int64_t row_end);

// Output size of `conv` along one axis of length `in`.
int64_t conv_output_size(const ConvParams& conv, int64_t in);

}  // namespace fastvlm
