#pragma once
// The spatial convolutions of the vision tower on channels-last [H, W, C] float32 maps, with runtime
// ISA dispatch: hand-written AVX-512 kernels for depthwise and channel-multiplier-2 convolutions (every
// spatial conv of FastViTHD but the stem), and one generic loop nest compiled for AVX-512, AVX2 and the
// baseline for everything else.
#include <cstdint>

#include "core/cpu.h"

namespace fastvlm {

struct GroupedConv;

// Writes output rows [row_begin, row_end) of `conv` applied to `input` ([in_h, in_w, in_channels]) to
// `output_rows` (those rows only, [row_end - row_begin, out_w, out_channels]), bias included. Runs on the
// calling thread.
void conv_rows(const GroupedConv& conv, const float* input, int64_t in_h, int64_t in_w, float* output_rows,
               int64_t row_begin, int64_t row_end, Isa isa = active_isa());

// Output size of `conv` along one axis of length `in`.
int64_t conv_output_size(const GroupedConv& conv, int64_t in);

}  // namespace fastvlm
