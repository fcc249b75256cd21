#pragma once
// Base64 (RFC 4648, standard alphabet) for the image data URLs of chat requests.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fastvlm::server {

// The decoded bytes, or nullopt when `text` is not base64: a character outside the alphabet, padding
// anywhere but at the end, or a length that no encoder produces. ASCII whitespace is skipped, since some
// clients wrap long data URLs; padding may be omitted.
std::optional<std::vector<uint8_t>> decode_base64(std::string_view text);

// Standard base64 with padding.
std::string encode_base64(std::span<const uint8_t> bytes);

}  // namespace fastvlm::server
