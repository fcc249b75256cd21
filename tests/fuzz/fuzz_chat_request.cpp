// libFuzzer target: the body of POST /v1/chat/completions. Anything a client can send must be accepted or
// refused with a 400 ApiError; local image paths are refused (no allowed directory), so the parser never
// touches the filesystem here.
#include "fuzz_files.h"
#include "server/api_error.h"
#include "server/chat_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fastvlm::server;
  try {
    parse_chat_request(fastvlm::fuzz::as_text(data, size), RequestPolicy{});
  } catch (const ApiError& error) {
    if (error.status() != 400) __builtin_trap();
  }
  return 0;
}
