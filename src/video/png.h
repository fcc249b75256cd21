#pragma once
// Frames go to the engine as encoded images (ImageInput::memory); PNG keeps their pixels exact.
#include <cstdint>
#include <vector>

#include "video/video_reader.h"

namespace fastvlm::video {

std::vector<uint8_t> encode_png(const RgbImage& image);

}  // namespace fastvlm::video
