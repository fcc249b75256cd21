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

struct DecodeOptions {
  // Refuse images whose header claims more pixels than this, before any pixel buffer is allocated.
  int64_t max_pixels = 64LL << 20;  // ~67 megapixels
  // The reference (Pillow without ImageOps.exif_transpose) ignores EXIF orientation; opt in to honour it.
  bool apply_exif_orientation = false;
};

}  // namespace fastvlm
