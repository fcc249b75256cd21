// The Scheduler (include/fastvlm/scheduler.hpp): every request's answer is token for token the one a
// fresh Session gives it alone, while 2-8 others join at different steps, leave (max_tokens, a stop
// string, end of turn) and are cancelled mid-way; prompts prefilled in chunks of a few positions; images;
// seeded sampling with penalties; a JSON schema. And the refusals: a prompt over a slot's share of the KV
// budget, a full queue, a shutdown with requests in flight.
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"
#include "fastvlm/fastvlm.hpp"
#include "fastvlm/scheduler.hpp"

namespace fs = std::filesystem;
using namespace fastvlm;

namespace {

const fs::path kFixtures = fs::path(FASTVLM_SHARED_DIR) / "fixtures";

std::unique_ptr<Engine> load(const std::string& model) {
  EngineOptions options;
  options.precision = Precision::F32;
  options.context = 512;
  return Engine::load((kFixtures / model).string(), options);
}

ScheduledRequest chat(std::string text, int max_tokens, std::optional<std::string> image = std::nullopt) {
  ScheduledRequest request;
  request.conversation.push_back({"user", std::move(text), std::nullopt});
  if (image) request.conversation.back().image = ImageInput::file((kFixtures / "tiny-fastvlm" / "golden" / *image).string());
  request.options.max_tokens = max_tokens;
  return request;
}

ScheduledRequest raw(std::string prompt, int max_tokens) {
  ScheduledRequest request;
  request.prompt = std::move(prompt);
  request.options.max_tokens = max_tokens;
  return request;
}

// The request run alone in a fresh Session.
Generation alone(const Engine& engine, const ScheduledRequest& request) {
  Session session(engine);
  if (!request.conversation.empty()) return session.respond(request.conversation, request.options);
  return session.complete(request.prompt, request.options, {}, request.image ? &*request.image : nullptr);
}

// Requests in flight in a scheduler, with what each streamed, and waits on their progress.
class Flight {
 public:
  explicit Flight(Scheduler& scheduler) : scheduler_(scheduler) {}

  // `stop_after_pieces` >= 0: on_text returns false after that many pieces (the client leaves).
  int submit(const ScheduledRequest& request, int stop_after_pieces = -1) {
    std::unique_lock lock(mutex_);
    const int index = int(results_.size());
    results_.emplace_back();
    lock.unlock();
    uint64_t id = 0;
    try {
      id = scheduler_.submit(
        request,
        [this, index, stop_after_pieces](std::string_view piece) {
          std::lock_guard guard(mutex_);
          Result& result = results_[size_t(index)];
          result.streamed += piece;
          ++result.pieces;
          max_batch_ = std::max(max_batch_, scheduler_.stats().last_batch);
          changed_.notify_all();
          return stop_after_pieces < 0 || result.pieces < stop_after_pieces;
        },
        [this, index](Generation answer, std::exception_ptr error) {
          std::lock_guard guard(mutex_);
          Result& result = results_[size_t(index)];
          result.answer = std::move(answer);
          result.error = error;
          result.done = true;
          changed_.notify_all();
        });
    } catch (...) {
      lock.lock();
      results_.pop_back();  // refused: nothing will come
      throw;
    }
    lock.lock();
    results_[size_t(index)].id = id;
    return index;
  }
  // Until request `index` streamed `pieces` pieces or ended.
  void wait_for(int index, int pieces) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return results_[size_t(index)].pieces >= pieces || results_[size_t(index)].done; });
  }
  void wait_all() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return std::all_of(results_.begin(), results_.end(), [](const Result& r) { return r.done; }); });
  }
  struct Result {
    uint64_t id = 0;
    std::string streamed;
    int pieces = 0;
    bool done = false;
    Generation answer;
    std::exception_ptr error;
  };
  Result result(int index) {
    std::lock_guard lock(mutex_);
    return results_[size_t(index)];
  }
  uint64_t id(int index) { return result(index).id; }
  int max_batch() {
    std::lock_guard lock(mutex_);
    return max_batch_;
  }

 private:
  Scheduler& scheduler_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Result> results_;
  int max_batch_ = 0;
};

void expect_same_answer(const Generation& expected, const Flight::Result& got, const std::string& what) {
  ASSERT_TRUE(got.done) << what;
  ASSERT_FALSE(got.error) << what;
  EXPECT_EQ(got.answer.token_ids, expected.token_ids) << what;
  EXPECT_EQ(got.answer.text, expected.text) << what;
  EXPECT_EQ(got.answer.stop_reason, expected.stop_reason) << what;
  EXPECT_EQ(got.streamed, got.answer.text) << what;
  EXPECT_EQ(got.answer.prompt_ids, expected.prompt_ids) << what;
}

// A cancelled request's tokens are the first of those it would have had alone.
void expect_prefix(const Generation& alone_answer, const Flight::Result& got, const std::string& what) {
  ASSERT_TRUE(got.done) << what;
  ASSERT_FALSE(got.error) << what;
  EXPECT_EQ(got.answer.stop_reason, StopReason::Cancelled) << what;
  ASSERT_LE(got.answer.token_ids.size(), alone_answer.token_ids.size()) << what;
  EXPECT_TRUE(std::equal(got.answer.token_ids.begin(), got.answer.token_ids.end(), alone_answer.token_ids.begin())) << what;
}

TEST(Scheduler, GreedyTextAnswersAreThoseOfASessionAloneWhileOthersJoinLeaveAndAreCancelled) {
  const auto engine = load("tiny-qwen2-text");
  std::vector<ScheduledRequest> requests = {
      chat("Write a haiku about the sea.", 40),
      raw("The quick brown fox jumps over the lazy dog, and then", 25),
      chat("List three colours, then explain why the sky looks blue during the day and red at dusk.", 30),
      raw("Once upon a time", 6),
      chat("Hi", 35),
      raw("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,", 20),
      chat("Translate to French: the cat sleeps on the warm windowsill all afternoon.", 28),
      raw("def fibonacci(n):\n    ", 30),
  };
  // A stop string from the middle of request 2's answer alone, so that it ends there.
  const Generation unstopped = alone(*engine, requests[2]);
  ASSERT_GE(unstopped.text.size(), 8u);
  requests[2].options.stop = {unstopped.text.substr(unstopped.text.size() / 2, 3)};
  std::vector<Generation> expected;
  for (const auto& request : requests) expected.push_back(alone(*engine, request));
  ASSERT_EQ(expected[2].stop_reason, StopReason::StopString);
  ASSERT_GE(expected[0].token_ids.size(), 10u);  // long enough to be cancelled mid-way

  SchedulerOptions options;
  options.slots = 4;  // fewer than the requests: some wait for a slot that another frees
  options.prefill_chunk = 3;
  Scheduler scheduler(*engine, options);
  Flight flight(scheduler);
  const int a = flight.submit(requests[0]);
  const int b = flight.submit(requests[1]);
  flight.wait_for(a, 3);
  const int c = flight.submit(requests[2]);
  const int d = flight.submit(requests[3]);
  flight.wait_for(b, 5);
  const int e = flight.submit(requests[4]);
  const int f = flight.submit(requests[5]);
  const int g = flight.submit(requests[6]);
  flight.wait_for(c, 2);
  const int h = flight.submit(requests[7]);
  // The same as request 0 twice more: one leaves after 4 pieces, one is cancelled by id.
  const int leaving = flight.submit(requests[0], 4);
  const int cancelled = flight.submit(requests[0]);
  flight.wait_for(cancelled, 2);
  scheduler.cancel(flight.id(cancelled));
  flight.wait_all();

  const int order[] = {a, b, c, d, e, f, g, h};
  for (int i = 0; i < 8; ++i) expect_same_answer(expected[size_t(i)], flight.result(order[i]), "request " + std::to_string(i));
  expect_prefix(expected[0], flight.result(leaving), "left after 4 pieces");
  expect_prefix(expected[0], flight.result(cancelled), "cancelled by id");
  EXPECT_LT(flight.result(cancelled).answer.token_ids.size(), expected[0].token_ids.size());
  EXPECT_GE(flight.max_batch(), 3);  // they did decode together
  const SchedulerStats stats = scheduler.stats();
  EXPECT_EQ(stats.completed, 10u);
  EXPECT_EQ(stats.active, 0);
  EXPECT_EQ(stats.queued, 0);
  EXPECT_GT(stats.generated_tokens, 100u);
}

TEST(Scheduler, ImageRequestsPrefilledInChunksAnswerAsAlone) {
  const auto engine = load("tiny-fastvlm");
  std::vector<ScheduledRequest> requests = {
      chat("Describe the image.", 24, "image_a_320x200.png"),
      chat("What is in this picture?", 20, "image_b_97x131.jpg"),
      chat("Write a short poem.", 30),
      chat("Describe the image in detail, please.", 16, "image_a_320x200.png"),
  };
  ScheduledRequest two_images;
  two_images.conversation = {{"user", "First image.", ImageInput::file((kFixtures / "tiny-fastvlm/golden/image_b_97x131.jpg").string())},
                             {"assistant", "A picture.", std::nullopt},
                             {"user", "And this one?", ImageInput::file((kFixtures / "tiny-fastvlm/golden/image_a_320x200.png").string())}};
  two_images.options.max_tokens = 18;
  requests.push_back(two_images);
  std::vector<Generation> expected;
  for (const auto& request : requests) expected.push_back(alone(*engine, request));

  SchedulerOptions options;
  options.slots = 3;
  options.prefill_chunk = 7;  // image prompts span many chunks
  Scheduler scheduler(*engine, options);
  Flight flight(scheduler);
  std::vector<int> index;
  index.push_back(flight.submit(requests[2]));
  flight.wait_for(index[0], 2);
  for (size_t i : {0, 1, 3, 4}) {
    index.push_back(flight.submit(requests[i]));
    flight.wait_for(index[0], int(index.size()) + 2);
  }
  flight.wait_all();
  const size_t order[] = {2, 0, 1, 3, 4};
  for (size_t i = 0; i < 5; ++i)
    expect_same_answer(expected[order[i]], flight.result(index[i]), "request " + std::to_string(order[i]));
}

TEST(Scheduler, SeededSampledAndSchemaRequestsAnswerAsAlone) {
  const auto engine = load("tiny-qwen2-text");
  std::vector<ScheduledRequest> requests;
  for (uint64_t seed : {7, 8, 9}) {
    ScheduledRequest request = chat("Tell me a story about a robot.", 30);
    request.options.sampling.temperature = 0.9f;
    request.options.sampling.top_k = 50;
    request.options.sampling.seed = seed;
    request.options.sampling.repeat_penalty = 1.1f;
    request.options.sampling.presence_penalty = 0.3f;
    requests.push_back(request);
  }
  ScheduledRequest schema = chat("Count.", 48);
  schema.options.json_schema = R"({"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]})";
  requests.push_back(schema);
  ScheduledRequest logprobs = raw("The answer is", 12);
  logprobs.options.logprobs = 3;
  requests.push_back(logprobs);
  std::vector<Generation> expected;
  for (const auto& request : requests) expected.push_back(alone(*engine, request));
  ASSERT_NE(expected[0].token_ids, expected[1].token_ids);  // the seeds matter
  ASSERT_EQ(expected[3].text.rfind("{\"n\":", 0), 0u) << expected[3].text;

  SchedulerOptions options;
  options.slots = 5;
  options.prefill_chunk = 4;
  Scheduler scheduler(*engine, options);
  Flight flight(scheduler);
  std::vector<int> index;
  for (size_t i = 0; i < requests.size(); ++i) {
    index.push_back(flight.submit(requests[i]));
    flight.wait_for(index[0], int(i) + 1);
  }
  flight.wait_all();
  for (size_t i = 0; i < requests.size(); ++i)
    expect_same_answer(expected[i], flight.result(index[i]), "request " + std::to_string(i));
  const Flight::Result with_logprobs = flight.result(index[4]);
  ASSERT_EQ(with_logprobs.answer.logprobs.size(), expected[4].logprobs.size());
  for (size_t t = 0; t < expected[4].logprobs.size(); ++t) {
    EXPECT_EQ(with_logprobs.answer.logprobs[t].id, expected[4].logprobs[t].id);
    EXPECT_NEAR(with_logprobs.answer.logprobs[t].logprob, expected[4].logprobs[t].logprob, 1e-4);
  }
}

TEST(Scheduler, RefusesWhatDoesNotFitAndAFullQueueBeforeAnyWork) {
  const auto engine = load("tiny-qwen2-text");
  SchedulerOptions options;
  options.slots = 2;
  options.kv_budget = 64;  // 32 positions a slot
  options.queue = 1;
  Scheduler scheduler(*engine, options);
  EXPECT_EQ(scheduler.stats().slot_capacity, 32);
  auto ignore_text = [](std::string_view) { return true; };
  auto ignore_done = [](Generation, std::exception_ptr) {};
  std::string long_prompt;
  for (int i = 0; i < 40; ++i) long_prompt += " word";
  try {
    scheduler.submit(raw(long_prompt, 4), ignore_text, ignore_done);
    FAIL() << "a prompt over the slot's 32 positions was queued";
  } catch (const SchedulerBusy&) {
    FAIL() << "refused as busy, not as too long";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not fit the context of 32"), std::string::npos) << e.what();
  }
  ScheduledRequest bad_schema = raw("x", 4);
  bad_schema.options.json_schema = R"({"type":"tuple"})";
  EXPECT_THROW(scheduler.submit(bad_schema, ignore_text, ignore_done), Error);
  EXPECT_THROW(Scheduler(*engine, {.slots = 0}), Error);
  EXPECT_THROW(Scheduler(*engine, {.slots = 4, .kv_budget = 4}), Error);

  // Two slots and one queue place: a fourth request is turned away until one ends.
  Scheduler small(*engine, {.slots = 2, .kv_budget = 1024, .queue = 1});
  Flight flight(small);
  for (int i = 0; i < 3; ++i) flight.submit(raw("Once upon a time", 200));
  EXPECT_THROW(flight.submit(raw("Once upon a time", 4)), SchedulerBusy);
  flight.wait_for(0, 2);
  flight.wait_for(1, 2);
  // Shutting down ends the running ones (as cancelled, unless they ended already) and turns the queued
  // one away: every request hears how it ended.
  small.shutdown();
  flight.wait_all();
  int busy = 0;
  for (int i = 0; i < 3; ++i)
    if (const Flight::Result r = flight.result(i); r.error) {
      EXPECT_THROW(std::rethrow_exception(r.error), SchedulerBusy);
      ++busy;
    }
  EXPECT_LE(busy, 1);
  EXPECT_THROW(flight.submit(raw("x", 1)), SchedulerBusy);
}

}  // namespace
