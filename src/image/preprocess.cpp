#include "image/preprocess.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/json_file.h"

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

// Per channel, what each 8-bit value becomes, as transformers computes it: rescale multiplies in float64
// and casts to float32, normalize subtracts and divides in float32.
using ValueTable = std::array<std::array<float, 256>, kChannels>;

ValueTable value_table(const ImageProcessorConfig& config) {
  ValueTable table;
  for (int c = 0; c < kChannels; ++c) {
    for (int v = 0; v < 256; ++v) {
      const float x = config.do_rescale ? float(double(v) * config.rescale_factor) : float(v);
      table[c][v] = config.do_normalize ? (x - config.mean[c]) / config.std[c] : x;
    }
  }
  return table;
}

// The out_height x out_width window of `image` whose top-left pixel is (top, left), as [1, 3, H, W]
// NCHW through `table`. Window pixels off the image read as 0 before the table, as transformers'
// center_crop pads the uint8 image with zeros when the crop is larger.
Tensor to_tensor(const Image& image, int top, int left, int out_height, int out_width, const ValueTable& table) {
  const int64_t plane = int64_t(out_height) * out_width;
  Tensor pixels({1, kChannels, out_height, out_width});
  float* out = pixels.data();
#pragma omp parallel for schedule(static)
  for (int y = 0; y < out_height; ++y) {
    const int image_y = y + top;
    for (int x = 0; x < out_width; ++x) {
      const int image_x = x + left;
      const bool on_image = image_y >= 0 && image_y < image.height && image_x >= 0 && image_x < image.width;
      const uint8_t* pixel = on_image ? &image.rgb[(size_t(image_y) * image.width + image_x) * kChannels] : nullptr;
      for (int c = 0; c < kChannels; ++c) out[c * plane + int64_t(y) * out_width + x] = table[c][pixel ? pixel[c] : 0];
    }
  }
  return pixels;
}

// Python's a // 2 (floor, also for negative a): transformers' center_crop offset.
int floor_half(int a) { return a >= 0 ? a / 2 : -((1 - a) / 2); }

// transformers' get_resize_output_image_size(default_to_square=False): the short side becomes
// `shortest_edge` and the long side int(shortest_edge * long / short), a true division truncated.
std::pair<int, int> shortest_edge_resize(int width, int height, int shortest_edge) {
  const bool portrait = width <= height;
  const int short_side = portrait ? width : height;
  const int long_side = portrait ? height : width;
  const double scaled = double(int64_t(shortest_edge) * long_side) / short_side;
  if (scaled > std::numeric_limits<int>::max())
    throw Error("preprocess_image: resizing " + std::to_string(width) + "x" + std::to_string(height) +
                " to a shortest edge of " + std::to_string(shortest_edge) + " is too large");
  return portrait ? std::pair{shortest_edge, int(scaled)} : std::pair{int(scaled), shortest_edge};
}

void check_image(const Image& image, const char* what) {
  if (image.empty() || image.rgb.size() != size_t(image.width) * image.height * kChannels)
    throw Error(std::string(what) + ": expected a non-empty RGB image, got " + std::to_string(image.width) +
                "x" + std::to_string(image.height) + " with " + std::to_string(image.rgb.size()) + " bytes");
}

// Padding to a square costs the longer side squared, and a shortest-edge resize the aspect ratio times the
// target size: images beyond image.h's side and aspect limits (which decoding already enforces) are refused.
void check_padding_bounds(const Image& image, const char* what) {
  const std::string size = std::to_string(image.width) + "x" + std::to_string(image.height);
  if (image.width > kMaxImageSide || image.height > kMaxImageSide)
    throw Error(std::string(what) + ": a " + size + " image is over the limit of " + std::to_string(kMaxImageSide) +
                " pixels a side");
  if (image.width > int64_t(image.height) * kMaxAspectRatio || image.height > int64_t(image.width) * kMaxAspectRatio)
    throw Error(std::string(what) + ": a " + size + " image has an aspect ratio over the limit of " +
                std::to_string(kMaxAspectRatio) + ":1");
}

// preprocessor_config.json's keys, each read with an error naming the file and the key.
class ConfigKeys {
 public:
  ConfigKeys(const std::filesystem::path& file, const nlohmann::json& root) : file_(file), root_(root) {
    if (!root_.is_object()) fail("", "a JSON object", root_);
  }

  const nlohmann::json* find(const std::string& key) const {
    const auto it = root_.find(key);
    return it == root_.end() ? nullptr : &*it;
  }

  bool boolean(const std::string& key, bool fallback) const {
    const nlohmann::json* value = find(key);
    if (!value) return fallback;
    if (!value->is_boolean()) fail(key, "true or false", *value);
    return value->get<bool>();
  }

  double number(const std::string& key, const nlohmann::json& value) const {
    if (!value.is_number()) fail(key, "a number", value);
    return value.get<double>();
  }

  // Sizes the output tensor, so no larger than the largest image accepted.
  int positive_int(const std::string& key, const nlohmann::json& value) const {
    if (!value.is_number_integer() || value.get<int64_t>() <= 0 || value.get<int64_t>() > kMaxImageSide)
      fail(key, "a positive integer up to " + std::to_string(kMaxImageSide), value);
    return value.get<int>();
  }

  // A size: the integer itself, or the integer at `field` of an object ({"shortest_edge": 336}).
  int size(const std::string& key, const std::string& field, int fallback) const {
    const nlohmann::json* value = find(key);
    if (!value) return fallback;
    if (!value->is_object()) return positive_int(key, *value);
    const auto it = value->find(field);
    if (it == value->end()) fail(key, "an object with \"" + field + "\"", *value);
    return positive_int(key + "." + field, *it);
  }

  // Three per-channel numbers, or one for every channel.
  std::array<float, 3> channels(const std::string& key, std::array<float, 3> fallback) const {
    const nlohmann::json* value = find(key);
    if (!value) return fallback;
    if (value->is_number()) fallback.fill(float(number(key, *value)));
    else if (!value->is_array() || value->size() != 3) fail(key, "3 numbers", *value);
    else for (int c = 0; c < 3; ++c) fallback[c] = float(number(key + "[" + std::to_string(c) + "]", (*value)[c]));
    return fallback;
  }

  [[noreturn]] void fail(const std::string& key, const std::string& expected, const nlohmann::json& got) const {
    std::string shown = got.dump();
    if (shown.size() > 80) shown = shown.substr(0, 77) + "...";  // one line, whatever the file holds
    throw Error(file_.string() + ": " + (key.empty() ? "" : "key \"" + key + "\": ") + "expected " + expected +
                ", got " + shown);
  }

 private:
  const std::filesystem::path& file_;
  const nlohmann::json& root_;
};

}  // namespace

ImageProcessorConfig read_image_processor_config(const std::filesystem::path& file) {
  const nlohmann::json root = read_json_file(file);
  const ConfigKeys keys(file, root);
  const nlohmann::json* type = keys.find("image_processor_type");
  if (!type || (*type != "CLIPImageProcessor" && *type != "CLIPImageProcessorFast"))
    keys.fail("image_processor_type", "\"CLIPImageProcessor\" or \"CLIPImageProcessorFast\"", type ? *type : nullptr);
  // Pillow's resample codes: 3 is BICUBIC, the only filter resize_bicubic implements.
  if (const nlohmann::json* resample = keys.find("resample"); resample && *resample != 3)
    keys.fail("resample", "3 (bicubic)", *resample);
  keys.boolean("do_convert_rgb", true);  // decoded images are RGB already; only its type is checked

  // CLIPImageProcessor's defaults for the keys a file leaves out.
  ImageProcessorConfig config;
  config.mode = ImageProcessorConfig::Mode::ResizeShortestEdgeCenterCrop;
  config.size = keys.size("size", "shortest_edge", 224);
  config.crop_height = keys.size("crop_size", "height", 224);
  config.crop_width = keys.size("crop_size", "width", 224);
  config.do_resize = keys.boolean("do_resize", true);
  config.do_center_crop = keys.boolean("do_center_crop", true);
  config.do_rescale = keys.boolean("do_rescale", true);
  config.do_normalize = keys.boolean("do_normalize", true);
  if (const nlohmann::json* factor = keys.find("rescale_factor")) config.rescale_factor = keys.number("rescale_factor", *factor);
  config.mean = keys.channels("image_mean", {0.48145466f, 0.4578275f, 0.40821073f});
  config.std = keys.channels("image_std", {0.26862954f, 0.26130258f, 0.27577711f});
  if (config.std[0] == 0 || config.std[1] == 0 || config.std[2] == 0)
    keys.fail("image_std", "non-zero numbers", root["image_std"]);
  return config;
}

Image pad_to_square(const Image& image) {
  check_image(image, "pad_to_square");
  check_padding_bounds(image, "pad_to_square");
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
  // The default config rescales by 1/255 and does not normalise: the reference's float32(float64(u8) * (1/255)).
  return to_tensor(image, 0, 0, image.height, image.width, value_table(ImageProcessorConfig{}));
}

Tensor preprocess_image(const Image& image, int image_size) {
  ImageProcessorConfig config;
  config.size = config.crop_height = config.crop_width = image_size;
  return preprocess_image(image, config);
}

Tensor preprocess_image(const Image& image, const ImageProcessorConfig& config) {
  check_image(image, "preprocess_image");
  check_padding_bounds(image, "preprocess_image");
  if (config.do_resize && config.size <= 0)
    throw Error("preprocess_image: image size must be positive, got " + std::to_string(config.size));
  if (config.do_center_crop && (config.crop_height <= 0 || config.crop_width <= 0))
    throw Error("preprocess_image: crop size must be positive, got " + std::to_string(config.crop_width) + "x" +
                std::to_string(config.crop_height));
  const Image* source = &image;
  Image resized;
  if (config.mode == ImageProcessorConfig::Mode::PadToSquare) {
    // Same pixels as resize_bicubic(pad_to_square(image), ...), without building the padded copy.
    const int side = std::max(image.width, image.height);
    resized = config.do_resize ? resize_on_canvas(image, side, side, (side - image.width) / 2,
                                                  (side - image.height) / 2, config.size, config.size)
                               : pad_to_square(image);
    source = &resized;
  } else if (config.do_resize) {
    const auto [width, height] = shortest_edge_resize(image.width, image.height, config.size);
    resized = resize_bicubic(image, width, height);
    source = &resized;
  }
  const int out_height = config.do_center_crop ? config.crop_height : source->height;
  const int out_width = config.do_center_crop ? config.crop_width : source->width;
  return to_tensor(*source, floor_half(source->height - out_height), floor_half(source->width - out_width), out_height,
                   out_width, value_table(config));
}

}  // namespace fastvlm
