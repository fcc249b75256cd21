#include "server/token_stream.h"

#include <utility>

namespace fastvlm::server {

bool TokenStream::push(std::string_view piece) {
  {
    std::lock_guard lock(mutex_);
    if (cancelled_) return false;
    pending_ += piece;
  }
  changed_.notify_all();
  return true;
}

void TokenStream::finish(Generation generation) {
  {
    std::lock_guard lock(mutex_);
    generation_ = std::move(generation);
    ended_ = true;
  }
  changed_.notify_all();
}

void TokenStream::fail(std::exception_ptr error) {
  {
    std::lock_guard lock(mutex_);
    error_ = std::move(error);
    ended_ = true;
  }
  changed_.notify_all();
}

std::optional<std::string> TokenStream::next() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return !pending_.empty() || ended_; });
  if (pending_.empty()) return std::nullopt;
  return std::exchange(pending_, {});
}

void TokenStream::wait_for_output() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] { return !pending_.empty() || ended_; });
}

void TokenStream::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
}

bool TokenStream::failed() const {
  std::lock_guard lock(mutex_);
  return error_ != nullptr;
}

std::exception_ptr TokenStream::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

}  // namespace fastvlm::server
