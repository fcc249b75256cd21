#include "text/unicode.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>

#include "core/error.h"

namespace fastvlm::text {
namespace {

bool is_continuation(unsigned char b) { return (b & 0xC0) == 0x80; }

// True when the 8 bytes at p are all ASCII; lets validation skip plain text a word at a time.
bool eight_ascii_bytes(const char* p) {
  uint64_t word;
  std::memcpy(&word, p, sizeof word);
  return (word & 0x8080808080808080ull) == 0;
}

enum AsciiClass : uint8_t { kLetter = 1, kNumber = 2, kWhitespace = 4 };

constexpr std::array<uint8_t, 128> make_ascii_classes() {
  std::array<uint8_t, 128> classes{};
  for (int c = 'a'; c <= 'z'; ++c) classes[c] = kLetter;
  for (int c = 'A'; c <= 'Z'; ++c) classes[c] = kLetter;
  for (int c = '0'; c <= '9'; ++c) classes[c] = kNumber;
  for (int c = 0x09; c <= 0x0D; ++c) classes[c] = kWhitespace;
  classes[' '] = kWhitespace;
  return classes;
}
constexpr std::array<uint8_t, 128> kAsciiClasses = make_ascii_classes();

const UNormalizer2* nfc_normalizer() {
  static const UNormalizer2* normalizer = [] {
    UErrorCode status = U_ZERO_ERROR;
    const UNormalizer2* instance = unorm2_getNFCInstance(&status);
    if (U_FAILURE(status)) {
      throw Error(std::string("ICU: cannot load the NFC normalisation data: ") + u_errorName(status));
    }
    return instance;
  }();
  return normalizer;
}

int32_t checked_icu_length(size_t length) {
  if (length > size_t(INT32_MAX / 4)) {
    throw Error("text of " + std::to_string(length) + " bytes is too long to normalise");
  }
  return int32_t(length);
}

std::u16string utf8_to_utf16(std::string_view utf8) {
  std::u16string utf16(utf8.size(), u'\0');  // never more UTF-16 units than UTF-8 bytes
  int32_t written = 0;
  UErrorCode status = U_ZERO_ERROR;
  u_strFromUTF8(utf16.data(), int32_t(utf16.size()), &written, utf8.data(), checked_icu_length(utf8.size()),
                &status);
  if (U_FAILURE(status)) throw Error(std::string("ICU: UTF-8 to UTF-16 failed: ") + u_errorName(status));
  utf16.resize(size_t(written));
  return utf16;
}

std::string utf16_to_utf8(std::u16string_view utf16) {
  std::string utf8(utf16.size() * 3, '\0');  // a UTF-16 unit never needs more than 3 UTF-8 bytes
  int32_t written = 0;
  UErrorCode status = U_ZERO_ERROR;
  u_strToUTF8(utf8.data(), int32_t(utf8.size()), &written, utf16.data(), int32_t(utf16.size()), &status);
  if (U_FAILURE(status)) throw Error(std::string("ICU: UTF-16 to UTF-8 failed: ") + u_errorName(status));
  utf8.resize(size_t(written));
  return utf8;
}

}  // namespace

Utf8Sequence check_utf8_sequence(std::string_view bytes) {
  const auto b0 = static_cast<unsigned char>(bytes[0]);
  if (b0 < 0x80) return {Utf8Status::Valid, 1};
  size_t length;
  // The allowed range of the second byte excludes overlong forms (E0, F0), surrogates (ED) and code
  // points past U+10FFFF (F4), following the well-formed byte sequence table of the Unicode standard.
  unsigned char second_min = 0x80, second_max = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) second_min = 0xA0;
    if (b0 == 0xED) second_max = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) second_min = 0x90;
    if (b0 == 0xF4) second_max = 0x8F;
  } else {
    return {Utf8Status::Invalid, 1};
  }
  const size_t present = std::min(length, bytes.size());
  if (present >= 2) {
    const auto b1 = static_cast<unsigned char>(bytes[1]);
    if (b1 < second_min || b1 > second_max) return {Utf8Status::Invalid, 1};
  }
  for (size_t i = 2; i < present; ++i) {
    if (!is_continuation(static_cast<unsigned char>(bytes[i]))) return {Utf8Status::Invalid, 1};
  }
  if (present < length) return {Utf8Status::Truncated, present};
  return {Utf8Status::Valid, length};
}

std::optional<size_t> find_invalid_utf8(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (pos + 8 <= bytes.size() && eight_ascii_bytes(bytes.data() + pos)) {
      pos += 8;
      continue;
    }
    const Utf8Sequence sequence = check_utf8_sequence(bytes.substr(pos));
    if (sequence.status != Utf8Status::Valid) return pos;
    pos += sequence.length;
  }
  return std::nullopt;
}

char32_t next_code_point(std::string_view s, size_t& pos) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) {
    ++pos;
    return b0;
  }
  auto continuation = [&](size_t i) { return char32_t(static_cast<unsigned char>(s[pos + i]) & 0x3F); };
  char32_t c;
  if (b0 < 0xE0) {
    c = (char32_t(b0 & 0x1F) << 6) | continuation(1);
    pos += 2;
  } else if (b0 < 0xF0) {
    c = (char32_t(b0 & 0x0F) << 12) | (continuation(1) << 6) | continuation(2);
    pos += 3;
  } else {
    c = (char32_t(b0 & 0x07) << 18) | (continuation(1) << 12) | (continuation(2) << 6) | continuation(3);
    pos += 4;
  }
  return c;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(char(c));
  } else if (c < 0x800) {
    out.push_back(char(0xC0 | (c >> 6)));
    out.push_back(char(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(char(0xE0 | (c >> 12)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(char(0x80 | (c & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (c >> 18)));
    out.push_back(char(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(char(0x80 | (c & 0x3F)));
  }
}

std::string nfc(std::string_view s) {
  // Every code point below U+0300 is NFC and never combines with what precedes it, and their UTF-8
  // bytes are all below 0xCC, so such text (ASCII, Latin-1, most European text) needs no ICU call.
  if (std::none_of(s.begin(), s.end(), [](char b) { return static_cast<unsigned char>(b) >= 0xCC; })) {
    return std::string(s);
  }
  const UNormalizer2* normalizer = nfc_normalizer();
  const std::u16string utf16 = utf8_to_utf16(s);
  UErrorCode status = U_ZERO_ERROR;
  const int32_t normal_prefix = unorm2_spanQuickCheckYes(normalizer, utf16.data(), int32_t(utf16.size()), &status);
  if (U_FAILURE(status)) throw Error(std::string("ICU: NFC quick check failed: ") + u_errorName(status));
  if (size_t(normal_prefix) == utf16.size()) return std::string(s);

  // Composition can lengthen text (some singletons decompose to two units); retry with the size ICU
  // reports if the first guess is short.
  std::u16string normalized(utf16.size() + 16, u'\0');
  for (int attempt = 0; attempt < 2; ++attempt) {
    status = U_ZERO_ERROR;
    const int32_t length = unorm2_normalize(normalizer, utf16.data(), int32_t(utf16.size()), normalized.data(),
                                            int32_t(normalized.size()), &status);
    if (status == U_BUFFER_OVERFLOW_ERROR) {
      normalized.assign(size_t(length), u'\0');
      continue;
    }
    if (U_FAILURE(status)) throw Error(std::string("ICU: NFC normalisation failed: ") + u_errorName(status));
    normalized.resize(size_t(length));
    return utf16_to_utf8(normalized);
  }
  throw Error("ICU: NFC normalisation did not fit the size it reported");
}

bool is_letter(char32_t c) {
  if (c < 0x80) return kAsciiClasses[c] & kLetter;
  return (U_MASK(u_charType(UChar32(c))) & U_GC_L_MASK) != 0;
}

bool is_number(char32_t c) {
  if (c < 0x80) return kAsciiClasses[c] & kNumber;
  return (U_MASK(u_charType(UChar32(c))) & U_GC_N_MASK) != 0;
}

bool is_whitespace(char32_t c) {
  if (c < 0x80) return kAsciiClasses[c] & kWhitespace;
  return u_isUWhiteSpace(UChar32(c));
}

char32_t simple_case_fold(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
  return char32_t(u_foldCase(UChar32(c), U_FOLD_CASE_DEFAULT));
}

}  // namespace fastvlm::text
