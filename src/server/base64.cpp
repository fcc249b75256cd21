#include "server/base64.h"

#include <array>

namespace fastvlm::server {
namespace {

constexpr int8_t kInvalid = -1;

constexpr std::array<int8_t, 256> make_decoding_table() {
  std::array<int8_t, 256> table{};
  table.fill(kInvalid);
  constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < alphabet.size(); ++i) table[uint8_t(alphabet[i])] = int8_t(i);
  return table;
}
constexpr std::array<int8_t, 256> kDecodingTable = make_decoding_table();

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

}  // namespace

std::optional<std::vector<uint8_t>> decode_base64(std::string_view text) {
  std::vector<uint8_t> bytes;
  bytes.reserve(text.size() / 4 * 3 + 3);
  uint32_t bits = 0;   // pending bits, most significant first
  int bit_count = 0;   // how many of `bits` are pending
  int symbols = 0;     // alphabet characters seen
  int padding = 0;     // '=' seen; only more '=' (or whitespace) may follow the first one
  for (char c : text) {
    if (is_ascii_space(c)) continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    int8_t value = kDecodingTable[uint8_t(c)];
    if (value == kInvalid || padding > 0) return std::nullopt;
    ++symbols;
    bits = (bits << 6) | uint32_t(value);
    bit_count += 6;
    if (bit_count >= 8) {
      bit_count -= 8;
      bytes.push_back(uint8_t(bits >> bit_count));
      bits &= (1u << bit_count) - 1;
    }
  }
  // A final group of 1 symbol carries no whole byte; padding, when present, completes the last group.
  const int tail = symbols % 4;
  if (tail == 1) return std::nullopt;
  if (padding > 0 && (tail == 0 || tail + padding != 4)) return std::nullopt;
  // Canonical encoders leave the unused low bits of the last symbol zero; anything else is not base64.
  if (bits != 0) return std::nullopt;
  return bytes;
}

std::string encode_base64(std::span<const uint8_t> bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const uint32_t b0 = bytes[i], b1 = i + 1 < bytes.size() ? bytes[i + 1] : 0, b2 = i + 2 < bytes.size() ? bytes[i + 2] : 0;
    const uint32_t group = (b0 << 16) | (b1 << 8) | b2;
    out += alphabet[(group >> 18) & 63];
    out += alphabet[(group >> 12) & 63];
    out += i + 1 < bytes.size() ? alphabet[(group >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? alphabet[group & 63] : '=';
  }
  return out;
}

}  // namespace fastvlm::server
