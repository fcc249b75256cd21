#include "image/preprocess.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"

namespace fastvlm {
namespace {

constexpr int kChannels = 3;

// Pillow's fixed-point format for 8-bit resampling: 8 bits of result, 2 bits of headroom because
// bicubic weights go negative (partial sums can dip below 0 or exceed 1), the rest fraction.
constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr int32_t kRoundingBias = 1 << (kPrecisionBits - 1);

// Keys' cubic convolution kernel with a = -0.5, support 2. The expressions are arranged exactly as in
// Pillow so that every double rounds identically (the weights feed a fixed-point quantisation where one
// ulp can flip a coefficient).
double bicubic_kernel(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For each output sample of one axis: the first contributing input sample, how many contribute, and
// their fixed-point weights (`max_taps` slots per output, unused ones zero).
struct FilterBank {
  int max_taps = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;

  const int32_t* weights_of(int out_index) const { return &weights[size_t(out_index) * max_taps]; }
};

int32_t to_fixed_point(double weight) {
  // Round half away from zero, as Pillow does: a plain + 0.5 would round some negative weights
  // differently from the reference.
  const double scaled = weight * (1 << kPrecisionBits);
  return int32_t(weight < 0 ? -0.5 + scaled : 0.5 + scaled);
}

FilterBank make_filter_bank(int in_size, int out_size) {
  constexpr double kernel_support = 2.0;
  const double scale = double(in_size) / out_size;
  // When reducing, the kernel is stretched over `scale` input samples so that it also low-passes.
  const double filter_scale = std::max(scale, 1.0);
  const double support = kernel_support * filter_scale;
  const double inverse_filter_scale = 1.0 / filter_scale;

  FilterBank bank;
  bank.max_taps = int(std::ceil(support)) * 2 + 1;
  bank.first.resize(out_size);
  bank.count.resize(out_size);
  bank.weights.assign(size_t(out_size) * bank.max_taps, 0);
  std::vector<double> raw(bank.max_taps);
  for (int out = 0; out < out_size; ++out) {
    const double center = (out + 0.5) * scale;
    // Pillow truncates `center -/+ support + 0.5` towards zero, then clamps to the image.
    const int lo = std::max(int(center - support + 0.5), 0);
    const int hi = std::min(int(center + support + 0.5), in_size);
    const int taps = hi - lo;
    double sum = 0.0;
    for (int t = 0; t < taps; ++t) {
      raw[t] = bicubic_kernel((t + lo - center + 0.5) * inverse_filter_scale);
      sum += raw[t];
    }
    int32_t* weights = &bank.weights[size_t(out) * bank.max_taps];
    for (int t = 0; t < taps; ++t) weights[t] = to_fixed_point(sum != 0.0 ? raw[t] / sum : raw[t]);
    bank.first[out] = lo;
    bank.count[out] = taps;
  }
  return bank;
}

// Taps that fall on black padding add exactly zero to the integer sums, so a bank over the padded
// canvas's columns can be cut down to the columns of the pasted image (shifted to its coordinates)
// without changing any result.
FilterBank crop_to_image_columns(FilterBank bank, int x0, int image_width) {
  for (size_t out = 0; out < bank.first.size(); ++out) {
    const int lo = bank.first[out];
    const int kept_lo = std::max(lo, x0);
    const int kept_hi = std::min(lo + bank.count[out], x0 + image_width);
    const int kept = std::max(kept_hi - kept_lo, 0);
    int32_t* weights = &bank.weights[out * bank.max_taps];
    std::copy(weights + (kept_lo - lo), weights + (kept_lo - lo) + kept, weights);
    bank.first[out] = kept ? kept_lo - x0 : 0;
    bank.count[out] = kept;
  }
  return bank;
}

uint8_t clamp_fixed_point(int32_t accumulator) {
  return uint8_t(std::clamp(accumulator >> kPrecisionBits, 0, 255));
}

// One pixel's channels in the lanes of a 128-bit vector (GCC/Clang vector extensions, so the compiler
// emits SIMD multiply-adds on any target). The fourth lane carries the next pixel's red and is ignored.
using PixelLanes = int32_t __attribute__((vector_size(16)));

// Horizontal pass for one row whose samples were widened to int32 (once per row, rather than once
// per tap). `in` must have one readable sample past the last pixel, because every pixel is loaded as
// four lanes.
void resample_row(const int32_t* in, const FilterBank& bank, uint8_t* out) {
  const int out_width = int(bank.first.size());
  for (int x = 0; x < out_width; ++x) {
    const int32_t* pixel = in + size_t(bank.first[x]) * kChannels;
    const int32_t* weights = bank.weights_of(x);
    PixelLanes sum = {kRoundingBias, kRoundingBias, kRoundingBias, kRoundingBias};
    for (int t = 0; t < bank.count[x]; ++t, pixel += kChannels) {
      PixelLanes samples;
      std::memcpy(&samples, pixel, sizeof samples);
      sum += samples * weights[t];
    }
    for (int c = 0; c < kChannels; ++c) out[x * kChannels + c] = clamp_fixed_point(sum[c]);
  }
}

// Vertical pass: output row `out` blends whole input rows, so the inner loop runs along contiguous
// bytes with one weight and vectorises.
void resample_columns(const uint8_t* src, int width, const FilterBank& bank, int first_row_offset,
                      uint8_t* dst) {
  const int out_height = int(bank.first.size());
  const size_t stride = size_t(width) * kChannels;
#pragma omp parallel
  {
    std::vector<int32_t> accumulator(stride);
#pragma omp for schedule(static)
    for (int out = 0; out < out_height; ++out) {
      std::fill(accumulator.begin(), accumulator.end(), kRoundingBias);
      const int32_t* weights = bank.weights_of(out);
      const uint8_t* in = src + size_t(bank.first[out] - first_row_offset) * stride;
      for (int t = 0; t < bank.count[out]; ++t) {
        const uint8_t* in_row = in + t * stride;
        const int32_t weight = weights[t];
        for (size_t i = 0; i < stride; ++i) accumulator[i] += in_row[i] * weight;
      }
      uint8_t* out_row = dst + out * stride;
      for (size_t i = 0; i < stride; ++i) out_row[i] = clamp_fixed_point(accumulator[i]);
    }
  }
}

// Pillow's resize of the canvas_width x canvas_height picture made of `image` pasted at (x0, y0) on
// black, without materialising that picture: padding a 4000x3000 photo would mean writing 48 MB.
Image resize_on_canvas(const Image& image, int canvas_width, int canvas_height, int x0, int y0, int out_width,
                       int out_height) {
  const bool resize_x = out_width != canvas_width;
  const bool resize_y = out_height != canvas_height;
  const FilterBank vertical = make_filter_bank(canvas_height, out_height);
  // Like Pillow, the horizontal pass covers only the canvas rows some output row reads (this only
  // saves work: the result does not depend on it). Without a vertical resize that is every row.
  const int first_row = vertical.first.front();
  const int end_row = vertical.first.back() + vertical.count.back();
  const FilterBank horizontal =
      resize_x ? crop_to_image_columns(make_filter_bank(canvas_width, out_width), x0, image.width) : FilterBank{};

  const size_t in_stride = size_t(image.width) * kChannels;
  const size_t out_stride = size_t(out_width) * kChannels;
  Image rows{out_width, end_row - first_row, std::vector<uint8_t>(out_stride * (end_row - first_row))};
#pragma omp parallel
  {
    std::vector<int32_t> widened_row(in_stride + 1);  // + 1: room for resample_row's 4-lane loads
#pragma omp for schedule(static)
    for (int canvas_y = first_row; canvas_y < end_row; ++canvas_y) {
      uint8_t* out = &rows.rgb[(canvas_y - first_row) * out_stride];
      const int y = canvas_y - y0;
      const bool on_image = y >= 0 && y < image.height;
      const uint8_t* in = on_image ? &image.rgb[y * in_stride] : nullptr;
      if (!on_image) {
        std::fill(out, out + out_stride, 0);  // black stays black: all inputs zero
      } else if (!resize_x) {  // Pillow skips the pass: the row is the canvas row as is
        std::fill(out, out + out_stride, 0);
        std::copy(in, in + in_stride, out + size_t(x0) * kChannels);
      } else {
        std::copy(in, in + in_stride, widened_row.begin());
        resample_row(widened_row.data(), horizontal, out);
      }
    }
  }
  if (!resize_y) return rows;
  Image out{out_width, out_height, std::vector<uint8_t>(out_stride * out_height)};
  resample_columns(rows.rgb.data(), out_width, vertical, first_row, out.rgb.data());
  return out;
}

void check_image(const Image& image, const char* what) {
  if (image.empty() || image.rgb.size() != size_t(image.width) * image.height * kChannels)
    throw Error(std::string(what) + ": expected a non-empty RGB image, got " + std::to_string(image.width) +
                "x" + std::to_string(image.height) + " with " + std::to_string(image.rgb.size()) + " bytes");
}

}  // namespace

Image pad_to_square(const Image& image) {
  check_image(image, "pad_to_square");
  if (image.width == image.height) return image;
  const int side = std::max(image.width, image.height);
  const int x0 = (side - image.width) / 2;
  const int y0 = (side - image.height) / 2;
  Image square{side, side, std::vector<uint8_t>(size_t(side) * side * kChannels, 0)};
  const size_t row_bytes = size_t(image.width) * kChannels;
  for (int y = 0; y < image.height; ++y)
    std::memcpy(&square.rgb[(size_t(y + y0) * side + x0) * kChannels], &image.rgb[y * row_bytes], row_bytes);
  return square;
}

Image resize_bicubic(const Image& image, int out_width, int out_height) {
  check_image(image, "resize_bicubic");
  if (out_width <= 0 || out_height <= 0)
    throw Error("resize_bicubic: output size must be positive, got " + std::to_string(out_width) + "x" +
                std::to_string(out_height));
  if (out_width == image.width && out_height == image.height) return image;
  return resize_on_canvas(image, image.width, image.height, 0, 0, out_width, out_height);
}

Tensor to_pixel_values(const Image& image) {
  check_image(image, "to_pixel_values");
  // The reference computes float32(float64(u8) * (1/255)); a table keeps that exact rounding.
  std::array<float, 256> scaled;
  for (int v = 0; v < 256; ++v) scaled[v] = float(double(v) * (1.0 / 255));
  const int64_t plane = int64_t(image.width) * image.height;
  Tensor pixels({1, kChannels, image.height, image.width});
  float* out = pixels.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < plane; ++i)
    for (int c = 0; c < kChannels; ++c) out[c * plane + i] = scaled[image.rgb[i * kChannels + c]];
  return pixels;
}

Tensor preprocess_image(const Image& image, int image_size) {
  check_image(image, "preprocess_image");
  if (image_size <= 0)
    throw Error("preprocess_image: image size must be positive, got " + std::to_string(image_size));
  // Same pixels as resize_bicubic(pad_to_square(image), ...), without building the padded copy.
  const int side = std::max(image.width, image.height);
  return to_pixel_values(resize_on_canvas(image, side, side, (side - image.width) / 2, (side - image.height) / 2,
                                          image_size, image_size));
}

}  // namespace fastvlm
