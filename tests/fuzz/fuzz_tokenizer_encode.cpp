// libFuzzer target: encoding and decoding with the real Qwen2 tokenizer (FASTVLM_TOKENIZER_DIR, set by
// the ctest entry to fixtures/qwen2-tokenizer). Built and run by tests/fuzz/CMakeLists.txt.
// The first input byte picks the mode: raw bytes (invalid UTF-8 must be an Error, never a crash), or
// the rest read as code points so that every input is valid UTF-8. For valid text the ids must decode
// to the NFC form of the text, and a StreamDecoder fed one id at a time must print the same text.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace {

using namespace fastvlm::text;

const Tokenizer& tokenizer() {
  static const std::unique_ptr<Tokenizer> loaded = [] {
    const char* dir = std::getenv("FASTVLM_TOKENIZER_DIR");
    if (!dir) {
      std::fprintf(stderr, "set FASTVLM_TOKENIZER_DIR to a directory with the Qwen2 tokenizer files\n");
      std::abort();
    }
    return Tokenizer::load(dir);
  }();
  return *loaded;
}

// Normalisation stops at added tokens, so the expected text is NFC applied between them.
std::string nfc_between_added_tokens(std::string_view text) {
  static constexpr std::string_view kAddedTokens[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  std::string expected;
  size_t segment_start = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t matched = 0;
    for (std::string_view token : kAddedTokens) {
      if (text.substr(pos).starts_with(token)) matched = token.size();
    }
    if (matched == 0) {
      ++pos;
      continue;
    }
    expected += nfc(text.substr(segment_start, pos - segment_start));
    expected += text.substr(pos, matched);
    pos += matched;
    segment_start = pos;
  }
  return expected + nfc(text.substr(segment_start));
}

// Three input bytes per code point, folded into the Unicode range and away from surrogates.
std::string as_code_points(const uint8_t* data, size_t size) {
  std::string text;
  for (size_t i = 0; i + 3 <= size; i += 3) {
    char32_t c = (char32_t(data[i]) << 16 | char32_t(data[i + 1]) << 8 | data[i + 2]) % 0x110000;
    if (c >= 0xD800 && c <= 0xDFFF) c -= 0x800;
    append_utf8(text, c);
  }
  return text;
}

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_tokenizer_encode: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text = (data[0] & 1) ? as_code_points(data + 1, size - 1)
                                         : std::string(reinterpret_cast<const char*>(data + 1), size - 1);
  if (find_invalid_utf8(text)) {
    try {
      tokenizer().encode(text);
      check(false, "invalid UTF-8 was accepted");
    } catch (const fastvlm::Error&) {
    }
    return 0;
  }
  const std::vector<int32_t> ids = tokenizer().encode(text);
  const std::string decoded = tokenizer().decode(ids);
  check(decoded == nfc_between_added_tokens(text), "decode(encode(x)) differs from NFC(x)");

  StreamDecoder stream(tokenizer());
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  check(streamed == decoded, "StreamDecoder output differs from decode()");
  return 0;
}
