#pragma once
// Continuous batching: many requests over one Engine at once. Each request takes one of `slots` KV-cache
// slots; every step of the scheduler's thread runs ONE decoder pass for every sequence that is decoding
// and a bounded prefill chunk of a newly admitted prompt (each linear over all their rows, attention per
// sequence over its own cache), and samples each with its own options, RNG, penalties, stop strings
// and schema. Requests join and leave at any step; each answer is the one a Session would give alone.
//
//   fastvlm::Scheduler scheduler(*engine, {.slots = 4});
//   scheduler.submit({.conversation = messages, .options = options},
//                    [](std::string_view piece) { std::cout << piece; return true; },
//                    [](fastvlm::Generation answer, std::exception_ptr error) { ... });
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fastvlm/fastvlm.hpp"

namespace fastvlm {

struct SchedulerOptions {
  int slots = 4;  // sequences in flight (decoded together), each with its own KV cache
  // KV cache positions of all slots together, split evenly: a slot holds kv_budget / slots positions (as
  // llama-server's -c is split over -np). 0: EngineOptions::context positions per slot.
  int kv_budget = 0;
  // Most prompt positions prefilled in one decode step of other sequences (the chunk rides along in their
  // batch; a prompt admitted while nothing decodes is prefilled whole).
  int prefill_chunk = 64;
  // The longest pause wanted between two tokens of a decoding sequence: a chunk riding along gets the
  // positions that fit in this time beside their decode step, at the per-position cost measured so far
  // (at least 8 positions, at most prefill_chunk). 0: every chunk is prefill_chunk positions.
  std::chrono::milliseconds max_token_gap{200};
  int queue = 16;  // requests that may wait for a slot; one more is refused with SchedulerBusy
  std::chrono::milliseconds max_queue_wait{600000};  // a request waiting longer ends with SchedulerBusy
  // OpenMP threads of an image encode while other sequences are decoding (they get the rest of the
  // engine's threads meanwhile); 0: half of them. Alone, an encode gets every thread.
  int encode_threads = 0;
};

// A conversation answered like Session::respond (the chat format's default system prompt unless the
// conversation starts with one), or, when `conversation` is empty, a raw prompt like Session::complete.
struct ScheduledRequest {
  std::vector<ChatMessage> conversation;
  std::string prompt;
  std::optional<ImageInput> image;  // the raw prompt's, placed where it says "<image>"
  GenerateOptions options;
};

// The queue is full, the request waited longer than max_queue_wait, or the scheduler is shutting down.
class SchedulerBusy : public Error {
 public:
  using Error::Error;
};

struct SchedulerStats {
  int slots = 0;
  int slot_capacity = 0;     // KV positions of each slot
  int active = 0;            // requests holding a slot (prefilling or decoding)
  int queued = 0;            // requests waiting for a slot (their image being encoded included)
  int last_batch = 0;        // sequences in the last decode step
  uint64_t generated_tokens = 0;  // since the scheduler started
  uint64_t completed = 0;         // requests answered (cancelled ones included)
  double tokens_per_second = 0;   // tokens of the decode steps of the last 10 s over those steps' time
  double longest_gap_ms = 0;      // longest time between two decode steps with sequences decoding
};

// Receives the answer when the request ended (stop_reason Cancelled after cancel() or a false from
// on_text), or the error that ended it (then `answer` is empty).
using DoneCallback = std::function<void(Generation answer, std::exception_ptr error)>;

class Scheduler {
 public:
  // Throws fastvlm::Error when the slots or the KV budget make no sense for the model.
  Scheduler(const Engine& engine, const SchedulerOptions& options = {});
  ~Scheduler();  // shutdown()

  // Queues a request and returns its id. Throws, before any work and without calling a callback:
  // fastvlm::Error for a bad request (one whose prompt and one answer token do not fit a slot
  // included), SchedulerBusy when the queue is full or the scheduler shut down. Both callbacks run on the
  // scheduler's threads: on_text (may be empty; false cancels) for each printable piece, on_done once.
  uint64_t submit(ScheduledRequest request, TextCallback on_text, DoneCallback on_done);
  // Ends the request at the next step (its on_done gets stop_reason Cancelled); unknown ids are ignored.
  void cancel(uint64_t id);
  SchedulerStats stats() const;
  // Refuses new requests, ends running ones as cancelled and queued ones with SchedulerBusy, and joins the
  // threads. Idempotent.
  void shutdown();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fastvlm
