// PrefillBudget (src/vlm/prefill_budget.h): the chunk it picks against a cost model worked out by hand, how
// it learns the costs from steps with and without a chunk, its bounds (8 positions at least, prefill_chunk at
// most, never past the prompt), the thread scaling, and the Scheduler's refusal of a negative target.
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
  EXPECT_EQ(budget.next_chunk(1000, 2), 0);  // no decode step measured yet: one without a chunk first
  budget.stepped(0, 2, 150);  // 300 thread-ms
  // (250 ms x 2 threads - 300) / 4 = 50 positions.
  EXPECT_EQ(budget.next_chunk(1000, 2), 50);
  EXPECT_EQ(budget.next_chunk(30, 2), 30);  // never past the prompt
  // On one thread (an image encode holds the other): (250 - 300) < 0, so the least that advances.
  EXPECT_EQ(budget.next_chunk(1000, 1), PrefillBudget::kMinChunk);
}

TEST(PrefillBudget, FollowsMeasuredCostsAndStaysWithinItsBounds) {
  PrefillBudget budget(250, 128);
  budget.stepped(0, 1, 50);
  EXPECT_EQ(budget.next_chunk(1000, 1), PrefillBudget::kMinChunk);  // no prefill measured yet
  budget.prefilled(10, 1, 10);  // 1 thread-ms a position
  EXPECT_EQ(budget.next_chunk(1000, 1), 128);  // 200 would fit: capped at prefill_chunk
  // A step carrying 10 positions takes 100 ms: they added 50, 5 a position; the estimate moves half way,
  // to 3 -> (250 - 50) / 3.
  budget.stepped(10, 1, 100);
  EXPECT_EQ(budget.next_chunk(1000, 1), 66);
  budget.stepped(10, 1, 100);  // 4 -> 50
  EXPECT_EQ(budget.next_chunk(1000, 1), 50);
  // The decode step alone grows to 350 ms: its estimate to 200, leaving 50 ms = 12 positions.
  budget.stepped(0, 1, 350);
  EXPECT_EQ(budget.next_chunk(1000, 1), 12);
  // A step with a chunk faster than the decode estimate: the chunk still costs something (a tenth of the
  // step, 20 thread-ms over 10 positions = 2 a position; the estimate to 3 -> 50 / 3 = 16).
  budget.stepped(10, 1, 100);
  EXPECT_EQ(budget.next_chunk(1000, 1), 16);
}

TEST(PrefillBudget, NoTargetMeansTheFixedChunk) {
  PrefillBudget budget(0, 64);
  EXPECT_EQ(budget.next_chunk(1000, 1), 64);
  budget.prefilled(10, 1, 1000);
  budget.stepped(0, 1, 1000);
  EXPECT_EQ(budget.next_chunk(1000, 1), 64);
  PrefillBudget small(250, 3);  // a prefill_chunk under the minimum bounds it too
  small.stepped(0, 1, 1000);
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
