#pragma once
// The Unicode pieces the Qwen2 tokenizer needs: strict UTF-8 decoding, NFC normalisation and the
// character classes of its pre-tokenizer regex. ICU supplies the Unicode data; ASCII (nearly all
// prompt text) is answered from small tables without calling into ICU.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fastvlm::text {

// Byte offset of the first byte that does not start a well-formed UTF-8 sequence (overlong forms,
// surrogates, code points above U+10FFFF and truncated sequences are all ill-formed), or nullopt
// when the whole string is valid.
std::optional<size_t> find_invalid_utf8(std::string_view bytes);

// What starts at bytes[0] (non-empty): a well-formed sequence of `length` bytes, a proper prefix of
// one (more bytes may complete it), or an ill-formed sequence.
enum class Utf8Status { Valid, Truncated, Invalid };
struct Utf8Sequence {
  Utf8Status status;
  size_t length;  // bytes of the sequence when Valid, bytes present when Truncated, 1 when Invalid
};
Utf8Sequence check_utf8_sequence(std::string_view bytes);

// Decodes the code point starting at bytes[pos] and advances pos past it. The input must already be
// valid UTF-8 (see find_invalid_utf8).
char32_t next_code_point(std::string_view valid_utf8, size_t& pos);

void append_utf8(std::string& out, char32_t code_point);

// Unicode Normalization Form C of valid UTF-8 text. Text that is already NFC (checked quickly) is
// returned unchanged.
std::string nfc(std::string_view valid_utf8);

// The classes used by the pre-tokenizer: \p{L} (general category L*), \p{N} (Nd, Nl, No) and \s
// (the White_Space property, which includes U+0085 and U+00A0 but not U+FEFF).
bool is_letter(char32_t c);
bool is_number(char32_t c);
bool is_whitespace(char32_t c);

// Simple (one-to-one) Unicode case folding, as a case-insensitive regex compares characters:
// 'S' and U+017F LATIN SMALL LETTER LONG S both fold to 's'.
char32_t simple_case_fold(char32_t c);

}  // namespace fastvlm::text
