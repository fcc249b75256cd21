#include "video/sampler.h"

#include <cmath>
#include <cstdlib>

namespace fastvlm::video {

double mean_abs_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.empty() || a.size() != b.size()) return 1;
  uint64_t sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += uint64_t(std::abs(int(a[i]) - int(b[i])));
  return double(sum) / (255.0 * double(a.size()));
}

bool FrameSampler::take(double seconds, const std::vector<uint8_t>& thumbnail) {
  if (options_.scene) {
    const bool first = previous_.empty();
    const bool cut = !first && mean_abs_difference(thumbnail, previous_) > *options_.scene;
    previous_ = thumbnail;
    return first || cut;
  }
  // Frame times are rounded from the stream's time base: allow a microsecond so that 0.1 x 10 still
  // counts as 1 s.
  constexpr double kTolerance = 1e-6;
  if (next_due_ && seconds + kTolerance < *next_due_) return false;
  const double every = options_.every_seconds;
  next_due_ = every > 0 ? (std::floor(seconds / every + kTolerance) + 1) * every : seconds;
  return true;
}

}  // namespace fastvlm::video
