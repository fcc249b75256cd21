#pragma once
// Image preprocessing, bit-exact with the references' Pillow: FastVLM's (image_aspect_ratio "pad": pad
// to a black square, bicubic resize on uint8, scale to [0, 1]) and transformers' CLIPImageProcessor
// (bicubic resize of the shortest edge, center crop, rescale, normalise) that transformers-native
// fast_vlm conversions configure in preprocessor_config.json.
#include <array>
#include <filesystem>

#include "core/tensor.h"
#include "image/image.h"

namespace fastvlm {

struct ImageProcessorConfig {
  enum class Mode {
    PadToSquare,                  // pad to a black square, resize to size x size
    ResizeShortestEdgeCenterCrop  // resize so the shortest edge is `size`, aspect kept
  } mode = Mode::PadToSquare;
  int size = 1024;  // PadToSquare: the square's side; ResizeShortestEdgeCenterCrop: shortest_edge
  int crop_height = 1024, crop_width = 1024;
  bool do_resize = true, do_center_crop = true, do_rescale = true, do_normalize = false;
  double rescale_factor = 1.0 / 255;
  std::array<float, 3> mean{0, 0, 0}, std{1, 1, 1};
};

// Reads a CLIPImageProcessor preprocessor_config.json into a ResizeShortestEdgeCenterCrop config; keys
// it lacks take CLIPImageProcessor's defaults (224 / 224 crop, OpenAI CLIP mean and std, every step on).
// Throws fastvlm::Error naming the file and key for a wrong type, an image_processor_type other than
// CLIPImageProcessor / CLIPImageProcessorFast, a resample other than 3 (bicubic), a size that is not
// positive, or a zero std.
ImageProcessorConfig read_image_processor_config(const std::filesystem::path& file);

// Expands to a square of the longer side S filled with black, the image pasted at ((S-w)/2, (S-h)/2)
// (integer division, as LLaVA's expand2square). A square image is returned unchanged.
Image pad_to_square(const Image& image);

// Pillow's `Image.resize((out_w, out_h), Image.BICUBIC)` on RGB, bit for bit: separable fixed-point
// convolution, horizontal pass then vertical pass, each clamped to uint8.
Image resize_bicubic(const Image& image, int out_width, int out_height);

// [1, 3, H, W] float32 NCHW with value float(double(u8) / 255): the reference's mean 0, std 1
// normalisation changes nothing further.
Tensor to_pixel_values(const Image& image);

// pad_to_square -> resize_bicubic to image_size x image_size -> to_pixel_values.
Tensor preprocess_image(const Image& image, int image_size);

// [1, 3, crop_height, crop_width] float32 NCHW (without do_center_crop: the resized image's size), as
// transformers computes it: resize on uint8 (Pillow bicubic); center crop at
// (floor((h - crop_h) / 2), floor((w - crop_w) / 2)), zero where the crop reaches past a smaller image;
// float32(double(u8) * rescale_factor); then float32 (x - mean) / std.
Tensor preprocess_image(const Image& image, const ImageProcessorConfig& config);

}  // namespace fastvlm
