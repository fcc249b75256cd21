#pragma once
// An 8-bit RGB raster: the common currency between decoding and preprocessing.
#include <cstdint>
#include <vector>

namespace fastvlm {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // width * height * 3 bytes, interleaved R G B, rows top to bottom

  bool empty() const { return width == 0 || height == 0; }
};

// Images are refused (at decoding and at preprocessing) with a side over 16384 pixels or an aspect ratio
// over 64:1. Both are far beyond photos and screenshots; padding to a square costs the longer side
// squared, and a 1,000,000 x 1 strip would need a 3 TB canvas.
inline constexpr int kMaxImageSide = 16384;
inline constexpr int kMaxAspectRatio = 64;

struct DecodeOptions {
  // Refuse images whose header claims more pixels than this, before any pixel buffer is allocated.
  int64_t max_pixels = 64LL << 20;  // ~67 megapixels
  // The reference (Pillow without ImageOps.exif_transpose) ignores EXIF orientation; opt in to honour it.
  bool apply_exif_orientation = false;
};

}  // namespace fastvlm
