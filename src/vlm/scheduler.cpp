// The Scheduler (include/fastvlm/scheduler.hpp). Two threads: the encoder turns queued requests' images
// into embeddings (with part of the cores while streams are decoding), the stepper admits ready requests
// into free slots and advances them: one batched decode step that carries a bounded prefill chunk. A request's
// sampling is its RequestState's, as in a Session.
#include "fastvlm/scheduler.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <tuple>

#include "core/error.h"
#include "vlm/engine_impl.h"
#include "vlm/prefill_budget.h"
#include "vlm/prompt.h"
#include "vlm/request_state.h"
#include "vlm/sequence.h"

namespace fastvlm {
namespace {

constexpr auto kRateWindow = std::chrono::seconds(10);

struct Job {
  Job(const Engine::Impl& engine, const GenerateOptions& options, TextCallback on_text, DoneCallback on_done)
      : state(engine, options, std::move(on_text)), on_done(std::move(on_done)) {}
  uint64_t id = 0;
  RequestState state;
  DoneCallback on_done;
  Clock::time_point submitted = Clock::now();
  std::vector<int32_t> prompt_ids;  // kImageMarker per image
  std::vector<ImageInput> images;   // to encode, in prompt order
  Sequence sequence;                // once the images are encoded
  Timings timings;
  std::atomic<bool> cancel_requested{false};
  int slot = -1;
};

using JobPtr = std::shared_ptr<Job>;

}  // namespace

struct Scheduler::Impl {
  Impl(const Engine::Impl& engine, const SchedulerOptions& options);

  void encoder_loop();
  void stepper_loop();
  // One round of the stepper: cancellations, then a decode step carrying a prefill chunk (or a prompt
  // prefilled whole when nothing decodes).
  void step(std::vector<JobPtr>& running, int threads);
  void admit(std::vector<JobPtr>& admitted);
  // Removes `job` from its slot and hands its answer (or `error`) to its on_done.
  void finish(const JobPtr& job, std::exception_ptr error = nullptr);
  void fail_unadmitted(const JobPtr& job, const std::exception_ptr& error);

  const Engine::Impl& engine;
  const SchedulerOptions options;
  int slot_capacity = 0;
  int total_threads = 1, encode_threads = 1;
  std::vector<SequenceCache> slots;
  std::vector<bool> slot_busy;

  mutable std::mutex mutex;
  std::condition_variable work;          // the stepper: a request is ready, cancelled, or shutdown
  std::condition_variable images;        // the encoder: an image request arrived, a step ended, or shutdown
  std::deque<JobPtr> to_encode, ready;  // waiting for a slot, oldest first
  std::vector<JobPtr> active;            // holding a slot
  bool encoding = false;                 // the encoder is at work (the stepper uses fewer threads)
  int encoding_threads = 0;
  int stepping_threads = 0;              // the threads of the stepper's step under way, 0 between steps
  bool stopping = false;
  uint64_t next_id = 1;

  // Statistics (under mutex).
  int last_batch = 0;
  uint64_t generated = 0, completed = 0;
  std::deque<std::tuple<Clock::time_point, int, double>> recent_steps;  // when, tokens, ms
  Clock::time_point last_decode{};
  double longest_gap_ms = 0;

  PrefillBudget prefill_budget;  // the stepper's

  std::thread encoder, stepper;
};

Scheduler::Impl::Impl(const Engine::Impl& engine, const SchedulerOptions& options)
    : engine(engine), options(options), prefill_budget(double(options.max_token_gap.count()), options.prefill_chunk) {
  if (options.slots < 1) throw Error("the scheduler needs at least one slot, got " + std::to_string(options.slots));
  if (options.prefill_chunk < 1) throw Error("prefill chunk must be >= 1, got " + std::to_string(options.prefill_chunk));
  if (options.max_token_gap.count() < 0)
    throw Error("max token gap must be >= 0 ms, got " + std::to_string(options.max_token_gap.count()));
  if (options.queue < 0) throw Error("queue must be >= 0, got " + std::to_string(options.queue));
  if (options.kv_budget < 0) throw Error("KV budget must be >= 0, got " + std::to_string(options.kv_budget));
  slot_capacity = options.kv_budget > 0 ? options.kv_budget / options.slots : engine.options.context;
  const int max_positions = engine.decoder().config().max_position_embeddings;
  if (slot_capacity < 2 || slot_capacity > max_positions)
    throw Error("KV budget of " + std::to_string(slot_capacity) + " positions per slot (" +
                std::to_string(options.kv_budget) + " over " + std::to_string(options.slots) +
                " slots) must be between 2 and the model's " + std::to_string(max_positions));
  total_threads = engine.thread_count();
  encode_threads = options.encode_threads > 0 ? std::min(options.encode_threads, total_threads)
                                              : std::max(1, total_threads / 2);
  slots.reserve(size_t(options.slots));
  for (int i = 0; i < options.slots; ++i) slots.emplace_back(engine.decoder().config(), slot_capacity);
  slot_busy.assign(size_t(options.slots), false);
  encoder = std::thread([this] { encoder_loop(); });
  stepper = std::thread([this] { stepper_loop(); });
}

Scheduler::Scheduler(const Engine& engine, const SchedulerOptions& options)
    : impl_(std::make_unique<Impl>(engine.impl(), options)) {}

Scheduler::~Scheduler() { shutdown(); }

uint64_t Scheduler::submit(ScheduledRequest request, TextCallback on_text, DoneCallback on_done) {
  Impl& s = *impl_;
  const Engine::Impl& engine = s.engine;
  // Everything a request can get wrong is checked here, on the caller's thread, before it is queued.
  std::vector<int32_t> ids;
  std::vector<ImageInput> images;
  if (!request.conversation.empty()) {
    const std::vector<text::ChatTurn> turns = conversation_turns(request.conversation);
    ids = chat_prompt_ids(engine, turns, std::nullopt);
    for (ChatMessage& message : request.conversation)
      if (message.image) images.push_back(std::move(*message.image));
  } else {
    ids = raw_prompt_ids(engine, request.prompt);
    if (ids.empty()) throw Error("the prompt is empty");
    if (request.image) images.push_back(std::move(*request.image));
  }
  if (!images.empty() && !engine.model->vision)
    throw Error("model " + engine.info.path + " (" + engine.model->family + ") has no vision encoder: it cannot take an image");
  check_fits(engine, ids, int(images.size()), s.slot_capacity);
  auto job = std::make_shared<Job>(engine, request.options, std::move(on_text), std::move(on_done));
  job->prompt_ids = std::move(ids);
  job->images = std::move(images);
  if (job->images.empty()) job->sequence.add_prompt(job->prompt_ids, {}, engine.info.image_tokens, engine.info.hidden_size);

  std::unique_lock lock(s.mutex);
  if (s.stopping) throw SchedulerBusy("the scheduler is shutting down");
  const size_t waiting = s.to_encode.size() + s.ready.size();
  const size_t free_slots = size_t(std::count(s.slot_busy.begin(), s.slot_busy.end(), false));
  if (waiting >= free_slots + size_t(s.options.queue))
    throw SchedulerBusy("all " + std::to_string(s.slots.size()) + " slots are busy and " + std::to_string(waiting) +
                        " requests are already queued; retry later");
  job->id = s.next_id++;
  job->submitted = Clock::now();
  if (job->images.empty()) {
    s.ready.push_back(job);
    s.work.notify_one();
  } else {
    s.to_encode.push_back(job);
    s.images.notify_one();
  }
  return job->id;
}

void Scheduler::cancel(uint64_t id) {
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  for (auto* jobs : {&s.to_encode, &s.ready})
    for (const JobPtr& job : *jobs)
      if (job->id == id) job->cancel_requested = true;
  for (const JobPtr& job : s.active)
    if (job->id == id) job->cancel_requested = true;
  s.work.notify_one();
}

SchedulerStats Scheduler::stats() const {
  const Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  SchedulerStats stats;
  stats.slots = int(s.slots.size());
  stats.slot_capacity = s.slot_capacity;
  stats.active = int(s.active.size());
  stats.queued = int(s.to_encode.size() + s.ready.size());
  stats.last_batch = s.last_batch;
  stats.generated_tokens = s.generated;
  stats.completed = s.completed;
  int tokens = 0;
  double ms = 0;
  for (const auto& [when, step_tokens, step_ms] : s.recent_steps)
    if (Clock::now() - when <= kRateWindow) tokens += step_tokens, ms += step_ms;
  stats.tokens_per_second = ms > 0 ? tokens * 1000.0 / ms : 0;
  stats.longest_gap_ms = s.longest_gap_ms;
  return stats;
}

void Scheduler::shutdown() {
  Impl& s = *impl_;
  {
    std::lock_guard lock(s.mutex);
    s.stopping = true;
  }
  s.work.notify_all();
  s.images.notify_all();
  if (s.encoder.joinable()) s.encoder.join();
  if (s.stepper.joinable()) s.stepper.join();
}

void Scheduler::Impl::fail_unadmitted(const JobPtr& job, const std::exception_ptr& error) {
  if (job->cancel_requested) {
    Generation answer;
    answer.stop_reason = StopReason::Cancelled;
    job->on_done(std::move(answer), nullptr);
  } else {
    job->on_done({}, error);
  }
  std::lock_guard lock(mutex);
  ++completed;
}

void Scheduler::Impl::encoder_loop() {
  for (;;) {
    JobPtr job;
    int threads = total_threads;
    {
      std::unique_lock lock(mutex);
      images.wait(lock, [this] { return stopping || !to_encode.empty(); });
      if (stopping) break;
      job = to_encode.front();
      // Alone the encode takes every core; beside decoding streams, part of them, so that their tokens
      // keep coming (the stepper runs on the rest meanwhile).
      threads = active.empty() ? total_threads : encode_threads;
      encoding = true;
      encoding_threads = threads;
      // A step under way keeps the threads it started with: beside it the encode would oversubscribe the
      // cores and stretch that step (an OpenMP loop waits for its slowest thread). The next step starts on
      // the threads that the encode leaves.
      images.wait(lock, [&] { return stopping || stepping_threads + threads <= total_threads; });
      if (stopping) {
        encoding = false;
        break;
      }
    }
    std::exception_ptr error;
    if (job->cancel_requested) {
      error = std::make_exception_ptr(Error("cancelled"));
    } else {
      try {
        std::vector<EncodedImage> encoded;
        for (const ImageInput& image : job->images)
          encoded.push_back(engine.encode(image, job->images.size() == 1 ? &job->timings : nullptr, nullptr, nullptr, threads));
        job->sequence.add_prompt(job->prompt_ids, encoded, engine.info.image_tokens, engine.info.hidden_size);
      } catch (...) {
        error = std::current_exception();
      }
    }
    {
      std::lock_guard lock(mutex);
      to_encode.pop_front();
      encoding = false;
      // After shutdown the stepper takes no more: the job is turned away here instead.
      if (!error && stopping) error = std::make_exception_ptr(SchedulerBusy("the scheduler is shutting down"));
      if (!error) ready.push_back(job);
    }
    if (error) fail_unadmitted(job, error);
    work.notify_one();
  }
  // Shutting down: what still waits for its image is turned away.
  std::deque<JobPtr> left;
  {
    std::lock_guard lock(mutex);
    left.swap(to_encode);
  }
  for (const JobPtr& job : left) fail_unadmitted(job, std::make_exception_ptr(SchedulerBusy("the scheduler is shutting down")));
}

void Scheduler::Impl::admit(std::vector<JobPtr>& admitted) {
  // Under the lock. Oldest first, each into the free slot whose cache shares the longest prefix with it.
  while (!ready.empty()) {
    int best = -1, best_shared = -1;
    for (int i = 0; i < int(slots.size()); ++i) {
      if (slot_busy[size_t(i)]) continue;
      const int shared = slots[size_t(i)].shared_prefix(ready.front()->sequence);
      if (shared > best_shared) best = i, best_shared = shared;
    }
    if (best < 0) return;
    JobPtr job = ready.front();
    ready.pop_front();
    job->slot = best;
    slot_busy[size_t(best)] = true;
    active.push_back(job);
    admitted.push_back(job);
  }
}

void Scheduler::Impl::finish(const JobPtr& job, std::exception_ptr error) {
  Generation answer;
  if (error)
    slots[size_t(job->slot)].clear();  // whatever the cache holds now is unknown
  else
    answer = job->state.finish();
  {
    std::lock_guard lock(mutex);
    active.erase(std::find(active.begin(), active.end(), job));
    slot_busy[size_t(job->slot)] = false;
    ++completed;
  }
  job->on_done(std::move(answer), error);
  work.notify_one();  // a ready request may take the slot
}

void Scheduler::Impl::stepper_loop() {
  std::vector<JobPtr> running;  // the stepper's copy of `active`, in admission order
  for (;;) {
    std::vector<JobPtr> admitted, expired, cancelled;
    int threads = total_threads;
    {
      std::unique_lock lock(mutex);
      work.wait(lock, [this] { return stopping || !active.empty() || !ready.empty(); });
      if (stopping) break;
      for (auto it = ready.begin(); it != ready.end();) {
        if ((*it)->cancel_requested)
          cancelled.push_back(*it), it = ready.erase(it);
        else if (Clock::now() - (*it)->submitted > options.max_queue_wait)
          expired.push_back(*it), it = ready.erase(it);
        else
          ++it;
      }
      admit(admitted);
      if (encoding) threads = std::max(1, total_threads - encoding_threads);
      stepping_threads = threads;
    }
    for (const JobPtr& job : cancelled) fail_unadmitted(job, nullptr);
    for (const JobPtr& job : expired)
      fail_unadmitted(job, std::make_exception_ptr(SchedulerBusy(
                               "no slot became free within " +
                               std::to_string(options.max_queue_wait.count() / 1000) + " s; retry later")));
    for (const JobPtr& job : admitted) {
      job->state.start(std::move(job->sequence), slots[size_t(job->slot)], job->submitted, job->timings);
      running.push_back(job);
    }
    step(running, threads);
    {
      std::lock_guard lock(mutex);
      stepping_threads = 0;
    }
    images.notify_one();  // an encode waiting for this step to end may start
  }
  // Shutting down: running requests end as cancelled, ready ones are turned away.
  for (const JobPtr& job : running) {
    job->state.cancel();
    finish(job);
  }
  std::deque<JobPtr> left;
  {
    std::lock_guard lock(mutex);
    left.swap(ready);
  }
  for (const JobPtr& job : left) fail_unadmitted(job, std::make_exception_ptr(SchedulerBusy("the scheduler is shutting down")));
}

void Scheduler::Impl::step(std::vector<JobPtr>& running, int threads) {
  const TextDecoder& decoder = engine.decoder();
  const int hidden = engine.info.hidden_size, vocab = decoder.config().vocab_size;
  engine.use_threads(threads);
  auto end = [&](JobPtr job, std::exception_ptr error = nullptr) {  // a copy: `job` may live in `running`
    running.erase(std::find(running.begin(), running.end(), job));
    finish(job, std::move(error));
  };
  for (const JobPtr& job : std::vector<JobPtr>(running))
    if (job->cancel_requested) {
      job->state.cancel();
      end(job);
    }

  // Decoding: the prompt is in the cache and a chosen token waits to be fed.
  std::vector<JobPtr> decoding;
  for (const JobPtr& job : running)
    if (job->state.prefill_remaining() == 0) decoding.push_back(job);

  // The oldest request still prefilling: alone it is prefilled whole; beside decoding sequences a chunk of
  // it rides along in their decode step (one pass over the weights for both), as long as the token-gap
  // target allows.
  JobPtr prefilling;
  for (const JobPtr& job : running)
    if (job->state.prefill_remaining() > 0) {
      prefilling = job;
      break;
    }
  if (prefilling && decoding.empty()) {
    RequestState& state = prefilling->state;
    const int count = state.prefill_remaining();
    try {
      std::vector<float> embeddings(size_t(count) * hidden);
      state.prefill_embeddings(count, embeddings.data());
      const auto start = Clock::now();
      const std::vector<float> logits = decoder.forward(embeddings.data(), count, state.slot().cache);
      prefill_budget.prefilled(count, threads, ms_since(start));
      state.prefilled(count);
      if (state.on_logits(logits))
        decoding.push_back(prefilling);
      else
        end(prefilling);
    } catch (...) {
      end(prefilling, std::current_exception());
    }
    prefilling = nullptr;
  }
  if (decoding.empty()) return;

  const auto start = Clock::now();
  const int batch = int(decoding.size());
  const int chunk = prefilling ? prefill_budget.next_chunk(prefilling->state.prefill_remaining(), threads) : 0;
  std::vector<float> embeddings(size_t(batch + chunk) * hidden);
  std::vector<KVCache*> caches;
  for (int b = 0; b < batch; ++b) {
    decoding[size_t(b)]->state.next_embedding(embeddings.data() + size_t(b) * hidden);
    caches.push_back(&decoding[size_t(b)]->state.slot().cache);
  }
  std::vector<int> counts;
  if (chunk > 0) {
    prefilling->state.prefill_embeddings(chunk, embeddings.data() + size_t(batch) * hidden);
    caches.push_back(&prefilling->state.slot().cache);
    counts.assign(size_t(batch), 1);
    counts.push_back(chunk);
  }
  std::vector<float> logits;
  try {
    // One sequence alone takes the same path as a Session.
    logits = chunk == 0 && batch == 1 ? decoder.forward(embeddings.data(), 1, *caches[0])
                                      : decoder.forward_batch(embeddings.data(), caches, counts);
  } catch (...) {
    for (const JobPtr& job : decoding) end(job, std::current_exception());
    if (chunk > 0) end(prefilling, std::current_exception());
    return;
  }
  const double step_ms = ms_since(start);
  for (int b = 0; b < batch; ++b) {
    const JobPtr& job = decoding[size_t(b)];
    try {
      job->state.fed();
      if (!job->state.on_logits(std::span(logits).subspan(size_t(b) * vocab, size_t(vocab)))) end(job);
    } catch (...) {
      end(job, std::current_exception());
    }
  }
  if (chunk > 0) {
    RequestState& state = prefilling->state;
    try {
      state.prefilled(chunk);
      if (state.prefill_remaining() == 0 && !state.on_logits(std::span(logits).subspan(size_t(batch) * vocab, size_t(vocab))))
        end(prefilling);
    } catch (...) {
      end(prefilling, std::current_exception());
    }
  }
  // The sampling is part of the gap that a chunk adds to.
  prefill_budget.stepped(chunk, threads, ms_since(start));
  std::lock_guard lock(mutex);
  const auto now = Clock::now();
  last_batch = batch;
  generated += uint64_t(batch);
  recent_steps.emplace_back(now, batch, step_ms);
  while (!recent_steps.empty() && now - std::get<0>(recent_steps.front()) > kRateWindow) recent_steps.pop_front();
  if (last_decode != Clock::time_point{}) longest_gap_ms = std::max(longest_gap_ms, ms_since(last_decode));
  // A gap is measured only between steps of sequences that go on.
  last_decode = running.empty() ? Clock::time_point{} : now;
}

}  // namespace fastvlm
