#pragma once
// Hands the text of one generation from the thread running it to the HTTP thread streaming it, and
// carries cancellation back: once the client is gone, the generation's next TextCallback returns false.
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "fastvlm/fastvlm.hpp"

namespace fastvlm::server {

class TokenStream {
 public:
  // Generation side. push() returns false once the reader cancelled; it never blocks on the reader.
  bool push(std::string_view piece);
  void finish(Generation generation);
  void fail(std::exception_ptr error);

  // Reader side. Blocks until there is text or the generation ended; all text pending so far comes
  // back as one piece, nullopt once the generation ended and everything was read.
  std::optional<std::string> next();
  // Blocks until the generation produced text or ended, so the HTTP status can still reflect a failure.
  void wait_for_output();
  void cancel();

  // Valid once next() returned nullopt (or wait_for_output() saw the end).
  bool failed() const;
  std::exception_ptr error() const;
  const Generation& generation() const { return generation_; }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string pending_;
  bool ended_ = false, cancelled_ = false;
  Generation generation_;
  std::exception_ptr error_;
};

}  // namespace fastvlm::server
