#pragma once
// Video decoding with FFmpeg's libraries: frames in stream order, their time on the stream's own clock,
// as RGB pixels or as small grey thumbnails for comparing frames.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fastvlm::video {

struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;  // RGB24, row-major, no padding
};

// Side of the square grey thumbnail frames are compared on.
constexpr int kThumbnailSide = 64;

class VideoReader {
 public:
  // `path` is a file, or "-" for a stream on stdin. Throws fastvlm::Error naming the file when it is not
  // a video, has no video stream or no decoder for it.
  explicit VideoReader(const std::string& path);
  ~VideoReader();
  VideoReader(const VideoReader&) = delete;
  VideoReader& operator=(const VideoReader&) = delete;

  // Decodes the next frame; false at the end of the stream. Throws fastvlm::Error on corrupt data.
  bool next();
  // The current frame's time in seconds: (pts - the stream's start time) x time_base.
  double seconds() const;
  // Where the stream ends: the latest frame's time plus one frame at the stream's average rate.
  double end_seconds() const;
  RgbImage rgb() const;
  // kThumbnailSide² grey levels of the current frame, area-averaged.
  std::vector<uint8_t> thumbnail() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fastvlm::video
