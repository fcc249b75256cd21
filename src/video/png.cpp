#include "video/png.h"

#include <png.h>

#include "core/error.h"

namespace fastvlm::video {

std::vector<uint8_t> encode_png(const RgbImage& rgb) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = png_uint_32(rgb.width);
  image.height = png_uint_32(rgb.height);
  image.format = PNG_FORMAT_RGB;
  // The first call only measures.
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, rgb.pixels.data(), 0, nullptr))
    throw Error(std::string("cannot encode a frame as PNG: ") + image.message);
  std::vector<uint8_t> bytes(size);
  if (!png_image_write_to_memory(&image, bytes.data(), &size, 0, rgb.pixels.data(), 0, nullptr))
    throw Error(std::string("cannot encode a frame as PNG: ") + image.message);
  bytes.resize(size);
  return bytes;
}

}  // namespace fastvlm::video
