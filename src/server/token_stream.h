#pragma once
// Hands the text of one response's generations (its `n` choices) from the scheduler thread producing them
// to the HTTP thread streaming them, and carries cancellation back: once the client is gone, every
// choice's next TextCallback returns false.
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fastvlm/fastvlm.hpp"

namespace fastvlm::server {

class TokenStream {
 public:
  explicit TokenStream(int choices = 1);

  // Generation side. push() returns false once the reader cancelled; it never blocks on the reader.
  bool push(int choice, std::string_view piece);
  void finish(int choice, Generation generation);
  void fail(int choice, std::exception_ptr error);

  // Reader side. Blocks until a choice has text or every choice ended; all text pending so far of the
  // lowest such choice comes back as one piece, nullopt once every choice ended and everything was read.
  struct Piece {
    int choice;
    std::string text;
  };
  std::optional<Piece> next();
  // Blocks until a choice produced text or failed, or every choice ended, so the HTTP status can still
  // reflect a failure.
  void wait_for_output();
  // Blocks until every choice ended or `timeout` passed; true when they all ended.
  bool wait_until_ended(std::chrono::milliseconds timeout);
  void cancel();

  // Valid once every choice ended.
  bool failed() const;
  std::exception_ptr error() const;  // the first failure
  const Generation& generation(int choice) const { return choices_[size_t(choice)].generation; }
  int choices() const { return int(choices_.size()); }

 private:
  struct Choice {
    std::string pending;
    bool ended = false;
    Generation generation;
    std::exception_ptr error;
  };
  bool all_ended() const;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Choice> choices_;
  bool cancelled_ = false;
};

}  // namespace fastvlm::server
