#pragma once
// Which decoded frames are worth a question: one every N seconds of stream time, or the first frame of
// each new scene.
#include <cstdint>
#include <optional>
#include <vector>

namespace fastvlm::video {

struct SamplingOptions {
  double every_seconds = 1;             // 0: every frame
  std::optional<double> scene;          // set: sample on scene changes instead, at this threshold
};

class FrameSampler {
 public:
  explicit FrameSampler(SamplingOptions options) : options_(options) {}
  // Called for every decoded frame in order; true when this one is to be answered. The first frame
  // always is. With `every_seconds`, the first frame at or after each multiple of it (so a 10 fps video
  // sampled every second gives 0, 1, 2 s); with `scene`, a frame whose thumbnail differs from the
  // previous frame's by more than the threshold (mean absolute difference, 0 to 1).
  bool take(double seconds, const std::vector<uint8_t>& thumbnail);
  // Only scene detection looks at thumbnails; without it take() may be given an empty one.
  bool needs_thumbnails() const { return options_.scene.has_value(); }

 private:
  SamplingOptions options_;
  std::optional<double> next_due_;
  std::vector<uint8_t> previous_;
};

// Mean absolute difference of two equally sized grey images, 0 (identical) to 1 (black against white).
double mean_abs_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b);

}  // namespace fastvlm::video
