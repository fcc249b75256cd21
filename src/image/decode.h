#pragma once
// Decoding JPEG, PNG and WebP into RGB8 exactly as Pillow's `Image.open(f).convert('RGB')` would:
// JPEG through libjpeg-turbo with its defaults (ISLOW DCT, fancy upsampling), alpha dropped (never
// composited), palettes and grey expanded. The format is sniffed from the magic bytes, not the file
// name. Every failure (unknown format, truncated or corrupt data, an image over the pixel limit) is a
// fastvlm::Error naming the source.
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>

#include "image/image.h"

namespace fastvlm {

Image decode_image_file(const std::filesystem::path& path, const DecodeOptions& options = {});

Image decode_image_memory(std::span<const uint8_t> bytes, const DecodeOptions& options = {},
                          std::string_view source_name = "<memory>");

}  // namespace fastvlm
