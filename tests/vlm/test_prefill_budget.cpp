// PrefillBudget (src/vlm/prefill_budget.h): the chunk it picks against a cost model worked out by hand, its
// bounds (8 positions at least, prefill_chunk at most, never past the prompt), the thread scaling, and the
// Scheduler's refusal of a negative target.
#include "vlm/prefill_budget.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "fastvlm/fastvlm.hpp"
#include "fastvlm/scheduler.hpp"

namespace fs = std::filesystem;
using namespace fastvlm;

TEST(PrefillBudget, ChunkFillsTheGapThatTheDecodeStepLeaves) {
  PrefillBudget budget(250, 64);
  budget.prefilled(100, 2, 200);  // 2 ms a position on 2 threads: 4 thread-ms
  budget.decoded(2, 150);         // 300 thread-ms
  // (250 ms x 2 threads - 300) / 4 = 50 positions.
  EXPECT_EQ(budget.next_chunk(1000, 2), 50);
  EXPECT_EQ(budget.next_chunk(30, 2), 30);  // never past the prompt
  // On one thread (an image encode holds the other): (250 - 300) < 0, so the least that advances.
  EXPECT_EQ(budget.next_chunk(1000, 1), PrefillBudget::kMinChunk);
}

TEST(PrefillBudget, FollowsMeasuredCostsAndStaysWithinItsBounds) {
  PrefillBudget budget(250, 128);
  EXPECT_EQ(budget.next_chunk(1000, 2), PrefillBudget::kMinChunk);  // nothing measured yet
  budget.prefilled(10, 1, 10);  // 1 thread-ms a position
  budget.decoded(1, 50);
  EXPECT_EQ(budget.next_chunk(1000, 1), 128);  // 200 would fit: capped at prefill_chunk
  // Prefill slows down to 5 thread-ms a position: the estimate moves half way, to 3 -> (250 - 50) / 3.
  budget.prefilled(10, 1, 50);
  EXPECT_EQ(budget.next_chunk(1000, 1), 66);
  budget.prefilled(10, 1, 50);  // 4 -> 50
  EXPECT_EQ(budget.next_chunk(1000, 1), 50);
  // The decode step grows to 350 ms: its estimate to 200, leaving 50 ms = 12 positions.
  budget.decoded(1, 350);
  EXPECT_EQ(budget.next_chunk(1000, 1), 12);
}

TEST(PrefillBudget, NoTargetMeansTheFixedChunk) {
  PrefillBudget budget(0, 64);
  budget.prefilled(10, 1, 1000);
  budget.decoded(1, 1000);
  EXPECT_EQ(budget.next_chunk(1000, 1), 64);
  PrefillBudget small(250, 3);  // a prefill_chunk under the minimum bounds it too
  EXPECT_EQ(small.next_chunk(1000, 1), 3);
}

TEST(PrefillBudget, SchedulerRefusesANegativeTarget) {
  EngineOptions options;
  options.precision = Precision::F32;
  const auto engine =
      Engine::load((fs::path(FASTVLM_SHARED_DIR) / "fixtures" / "tiny-qwen2-text").string(), options);
  try {
    Scheduler scheduler(*engine, {.slots = 1, .max_token_gap = std::chrono::milliseconds(-1)});
    FAIL() << "a negative max token gap was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max token gap must be >= 0 ms, got -1"), std::string::npos) << e.what();
  }
}
