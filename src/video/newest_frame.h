#pragma once
// Live input: the decoder runs ahead on its own thread and leaves only its newest sampled frame here;
// the model takes it whenever it is free. Frames replaced before anyone took them are counted as
// skipped, so a slow model falls behind by at most one frame instead of a growing queue.
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>

#include "video/video_reader.h"

namespace fastvlm::video {

struct SampledFrame {
  double seconds = 0;
  RgbImage image;
  int skipped_before = 0;  // frames replaced by this one while the model was busy
};

class NewestFrame {
 public:
  // The decoder's side: replaces any frame not yet taken.
  void put(double seconds, RgbImage image);
  // The decoder's side, once: no more frames; `error` (if any) is rethrown by take().
  void close(std::exception_ptr error = nullptr);
  // The model's side: waits for a frame; nullopt once the stream has ended and every frame was taken.
  std::optional<SampledFrame> take();

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<SampledFrame> frame_;
  int skipped_ = 0;
  bool closed_ = false;
  std::exception_ptr error_;
};

}  // namespace fastvlm::video
