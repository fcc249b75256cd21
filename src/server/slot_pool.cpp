#include "server/slot_pool.h"

#include <algorithm>
#include <functional>
#include <string_view>

#include "server/api_error.h"

namespace fastvlm::server {

uint64_t message_fingerprint(const ChatMessage& message) {
  std::hash<std::string_view> hash;
  uint64_t h = hash(message.role);
  auto mix = [&h](uint64_t value) { h ^= value + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
  mix(hash(message.text));
  if (message.image) {
    const ImageInput& image = *message.image;
    mix(image.path.empty() ? hash(std::string_view(reinterpret_cast<const char*>(image.bytes.data()), image.bytes.size()))
                           : hash(image.path));
  }
  return h;
}

SlotPool::SlotPool(const Engine& engine, int slots, int queue_capacity, std::chrono::milliseconds max_wait)
    : slots_(size_t(std::max(slots, 1))), queue_capacity_(size_t(std::max(queue_capacity, 0))), max_wait_(max_wait) {
  for (Slot& slot : slots_) slot.session = std::make_unique<Session>(engine);
}

SlotPool::Lease::~Lease() {
  if (pool_) pool_->release(*slot_);
}

void SlotPool::release(Slot& slot) {
  {
    std::lock_guard lock(mutex_);
    slot.busy = false;
  }
  slot_freed_.notify_all();
}

SlotPool::Slot* SlotPool::best_free_slot(const std::vector<uint64_t>& conversation) {
  Slot* best = nullptr;
  size_t best_shared = 0;
  for (Slot& slot : slots_) {
    if (slot.busy) continue;
    auto [mismatch, _] = std::mismatch(slot.history.begin(), slot.history.end(), conversation.begin(), conversation.end());
    const size_t shared = size_t(mismatch - slot.history.begin());
    if (!best || shared > best_shared) best = &slot, best_shared = shared;
  }
  return best;
}

namespace {
ApiError shutting_down() { return ApiError(503, "server_error", "server_busy", "the server is shutting down"); }
}  // namespace

void SlotPool::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  slot_freed_.notify_all();
}

SlotPool::Lease SlotPool::acquire(const std::vector<uint64_t>& conversation) {
  std::unique_lock lock(mutex_);
  if (closed_) throw shutting_down();
  // With nobody waiting a free slot is taken at once; otherwise the request joins the queue's tail.
  if (waiting_.empty())
    if (Slot* slot = best_free_slot(conversation)) {
      slot->busy = true;
      return Lease(this, slot);
    }
  if (waiting_.size() >= queue_capacity_)
    throw ApiError(503, "server_error", "server_busy",
                   "all " + std::to_string(slots_.size()) + " slots are busy and " + std::to_string(waiting_.size()) +
                       " requests are already queued; retry later");
  const uint64_t ticket = next_ticket_++;
  waiting_.push_back(ticket);
  Slot* slot = nullptr;
  const bool granted = slot_freed_.wait_for(lock, max_wait_, [&] {
    return closed_ || (waiting_.front() == ticket && (slot = best_free_slot(conversation)) != nullptr);
  });
  waiting_.erase(std::find(waiting_.begin(), waiting_.end(), ticket));
  // The next in line may now be at the front with a slot still free.
  slot_freed_.notify_all();
  if (closed_) throw shutting_down();
  if (!granted)
    throw ApiError(503, "server_error", "server_busy",
                   "no slot became free within " + std::to_string(max_wait_.count() / 1000) + " s; retry later");
  slot->busy = true;
  return Lease(this, slot);
}

int SlotPool::busy() const {
  std::lock_guard lock(mutex_);
  return int(std::count_if(slots_.begin(), slots_.end(), [](const Slot& slot) { return slot.busy; }));
}

int SlotPool::queued() const {
  std::lock_guard lock(mutex_);
  return int(waiting_.size());
}

}  // namespace fastvlm::server
