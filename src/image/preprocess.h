#pragma once
// FastVLM's image preprocessing (image_aspect_ratio "pad"), bit-exact with the reference's Pillow:
// pad to a black square, bicubic resize on uint8, scale to [0, 1].
#include "core/tensor.h"
#include "image/image.h"

namespace fastvlm {

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

}  // namespace fastvlm
