#include "vlm/prefill_budget.h"

#include <algorithm>
#include <cmath>

namespace fastvlm {
namespace {

// Weight of a new measurement: half, so that an estimate follows a change of load within a few steps
// without jumping on a single outlier.
constexpr double kNewWeight = 0.5;

double blend(double estimate, double measured) {
  return estimate > 0 ? (1 - kNewWeight) * estimate + kNewWeight * measured : measured;
}

}  // namespace

PrefillBudget::PrefillBudget(double max_gap_ms, int max_chunk) : max_gap_ms_(max_gap_ms), max_chunk_(max_chunk) {}

int PrefillBudget::next_chunk(int remaining, int threads) const {
  int chunk = max_chunk_;
  if (max_gap_ms_ > 0) {
    if (decode_thread_ms_ <= 0) return 0;
    if (position_thread_ms_ > 0) {
      // In thread-ms: the target on `threads` threads, less what the decode step takes of it.
      const double left = max_gap_ms_ * threads - decode_thread_ms_;
      chunk = left > 0 ? int(std::min(double(max_chunk_), std::floor(left / position_thread_ms_))) : 0;
    } else {
      chunk = 0;  // nothing prefilled yet: the smallest chunk
    }
    chunk = std::clamp(chunk, std::min(kMinChunk, max_chunk_), max_chunk_);
  }
  return std::min(chunk, remaining);
}

void PrefillBudget::prefilled(int positions, int threads, double ms) {
  if (positions > 0) position_thread_ms_ = blend(position_thread_ms_, ms * threads / positions);
}

void PrefillBudget::stepped(int chunk, int threads, double ms) {
  if (chunk == 0) {
    decode_thread_ms_ = blend(decode_thread_ms_, ms * threads);
  } else if (decode_thread_ms_ > 0) {
    // What the chunk added to the step; a step faster than the estimate (the load dropped) counts as a
    // cheap chunk, not a free one.
    const double added = std::max(ms * threads - decode_thread_ms_, 0.1 * decode_thread_ms_);
    position_thread_ms_ = blend(position_thread_ms_, added / chunk);
  }
}

}  // namespace fastvlm
