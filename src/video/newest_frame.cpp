#include "video/newest_frame.h"

namespace fastvlm::video {

void NewestFrame::put(double seconds, RgbImage image) {
  {
    std::lock_guard lock(mutex_);
    if (frame_) ++skipped_;
    frame_ = SampledFrame{seconds, std::move(image), 0};
  }
  changed_.notify_one();
}

void NewestFrame::close(std::exception_ptr error) {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    error_ = error;
  }
  changed_.notify_one();
}

std::optional<SampledFrame> NewestFrame::take() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return frame_ || closed_; });
  // A decoding error ends the run even when a frame is waiting: the error is what the user must see.
  if (error_) std::rethrow_exception(error_);
  if (!frame_) return std::nullopt;
  SampledFrame frame = std::move(*frame_);
  frame_.reset();
  frame.skipped_before = skipped_;
  skipped_ = 0;
  return frame;
}

}  // namespace fastvlm::video
