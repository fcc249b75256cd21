#pragma once
// The slots: `parallel` Sessions (each with its own KV cache) shared by all requests, and a bounded
// first-come-first-served queue in front of them. A request that finds the queue full, or waits longer
// than allowed, gets a 503 with Retry-After. Among free slots a request takes the one whose last
// conversation shares the longest prefix with its own, so Session::respond reuses the most KV cache.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "fastvlm/fastvlm.hpp"

namespace fastvlm::server {

// A hash of one message (role, text, image bytes or path): conversations are compared message by message.
uint64_t message_fingerprint(const ChatMessage& message);

class SlotPool {
  struct Slot {
    std::unique_ptr<Session> session;
    std::vector<uint64_t> history;  // fingerprints of the conversation its KV cache holds
    bool busy = false;
  };

 public:
  SlotPool(const Engine& engine, int slots, int queue_capacity, std::chrono::milliseconds max_wait);

  // Exclusive use of one slot until destroyed.
  class Lease {
   public:
    Lease(Lease&& other) noexcept : pool_(other.pool_), slot_(other.slot_) { other.pool_ = nullptr; }
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    Session& session() { return *slot_->session; }
    // What the slot's KV cache now holds, for matching the next request (empty when unknown).
    void set_history(std::vector<uint64_t> history) { slot_->history = std::move(history); }

   private:
    friend class SlotPool;
    Lease(SlotPool* pool, Slot* slot) : pool_(pool), slot_(slot) {}
    SlotPool* pool_;
    Slot* slot_;
  };

  // Waits for a slot in arrival order. Throws ApiError 503 when the queue is full or the wait times out.
  Lease acquire(const std::vector<uint64_t>& conversation);

  // Turns away queued and future requests (503): the server is shutting down.
  void close();

  int slots() const { return int(slots_.size()); }
  int busy() const;
  int queued() const;

 private:
  void release(Slot& slot);
  Slot* best_free_slot(const std::vector<uint64_t>& conversation);

  std::vector<Slot> slots_;
  const size_t queue_capacity_;
  const std::chrono::milliseconds max_wait_;
  mutable std::mutex mutex_;
  std::condition_variable slot_freed_;
  std::deque<uint64_t> waiting_;  // tickets of queued requests, oldest first
  uint64_t next_ticket_ = 0;
  bool closed_ = false;
};

}  // namespace fastvlm::server
