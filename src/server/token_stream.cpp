#include "server/token_stream.h"

#include <algorithm>
#include <utility>

namespace fastvlm::server {

TokenStream::TokenStream(int choices) : choices_(size_t(std::max(choices, 1))) {}

bool TokenStream::push(int choice, std::string_view piece) {
  {
    std::lock_guard lock(mutex_);
    if (cancelled_) return false;
    choices_[size_t(choice)].pending += piece;
  }
  changed_.notify_all();
  return true;
}

void TokenStream::finish(int choice, Generation generation) {
  {
    std::lock_guard lock(mutex_);
    choices_[size_t(choice)].generation = std::move(generation);
    choices_[size_t(choice)].ended = true;
  }
  changed_.notify_all();
}

void TokenStream::fail(int choice, std::exception_ptr error) {
  {
    std::lock_guard lock(mutex_);
    choices_[size_t(choice)].error = std::move(error);
    choices_[size_t(choice)].ended = true;
  }
  changed_.notify_all();
}

bool TokenStream::all_ended() const {
  return std::all_of(choices_.begin(), choices_.end(), [](const Choice& c) { return c.ended; });
}

std::optional<TokenStream::Piece> TokenStream::next() {
  std::unique_lock lock(mutex_);
  auto with_text = [this] {
    return std::find_if(choices_.begin(), choices_.end(), [](const Choice& c) { return !c.pending.empty(); });
  };
  changed_.wait(lock, [&] { return with_text() != choices_.end() || all_ended(); });
  const auto choice = with_text();
  if (choice == choices_.end()) return std::nullopt;
  return Piece{int(choice - choices_.begin()), std::exchange(choice->pending, {})};
}

void TokenStream::wait_for_output() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [this] {
    return all_ended() || std::any_of(choices_.begin(), choices_.end(),
                                      [](const Choice& c) { return !c.pending.empty() || c.error; });
  });
}

bool TokenStream::wait_until_ended(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [this] { return all_ended(); });
}

void TokenStream::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
}

bool TokenStream::failed() const { return error() != nullptr; }

std::exception_ptr TokenStream::error() const {
  std::lock_guard lock(mutex_);
  for (const Choice& choice : choices_)
    if (choice.error) return choice.error;
  return nullptr;
}

}  // namespace fastvlm::server
