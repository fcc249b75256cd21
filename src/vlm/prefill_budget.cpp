#include "vlm/prefill_budget.h"

#include <algorithm>
#include <cmath>

namespace fastvlm {
namespace {

// Weight of a new measurement: half, so that the estimate follows a change of load within a few steps
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
    if (position_thread_ms_ <= 0) {
      chunk = PrefillBudget::kMinChunk;  // nothing measured yet: the smallest step
    } else {
      // In thread-ms: the target on `threads` threads, less what the decode step takes of it.
      const double left = max_gap_ms_ * threads - decode_thread_ms_;
      chunk = left > 0 ? int(std::min(double(max_chunk_), std::floor(left / position_thread_ms_))) : 0;
    }
    chunk = std::clamp(chunk, std::min(kMinChunk, max_chunk_), max_chunk_);
  }
  return std::min(chunk, remaining);
}

void PrefillBudget::prefilled(int positions, int threads, double ms) {
  if (positions > 0) position_thread_ms_ = blend(position_thread_ms_, ms * threads / positions);
}

void PrefillBudget::decoded(int threads, double ms) { decode_thread_ms_ = blend(decode_thread_ms_, ms * threads); }

}  // namespace fastvlm
