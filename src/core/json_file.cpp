#include "core/json_file.h"

#include <fstream>

#include "core/error.h"

namespace fastvlm {

nlohmann::json parse_json(std::string_view text, const std::string& source, const JsonLimits& limits) {
  if (text.size() > limits.max_bytes)
    throw Error(source + ": " + std::to_string(text.size()) + " bytes of JSON, more than the limit of " +
                std::to_string(limits.max_bytes));
  // The callback sees each container as it opens (with the number of containers around it), so a deep
  // file is refused before its tree exists.
  const nlohmann::json::parser_callback_t limit_depth = [&](int depth, nlohmann::json::parse_event_t event,
                                                            nlohmann::json&) {
    const bool opens = event == nlohmann::json::parse_event_t::object_start ||
                       event == nlohmann::json::parse_event_t::array_start;
    if (opens && depth >= limits.max_depth)
      throw Error(source + ": JSON nests deeper than " + std::to_string(limits.max_depth) + " levels");
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), limit_depth);
  } catch (const nlohmann::json::exception& e) {
    throw Error(source + ": invalid JSON: " + e.what());
  }
}

nlohmann::json read_json_file(const std::filesystem::path& path, const JsonLimits& limits) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(path.string() + ": cannot open");
  const std::streamoff size = in.tellg();
  // Checked before reading, so a huge file costs nothing.
  if (size < 0 || uint64_t(size) > limits.max_bytes)
    throw Error(path.string() + ": " + std::to_string(size) + " bytes of JSON, more than the limit of " +
                std::to_string(limits.max_bytes));
  std::string text(size_t(size), '\0');
  in.seekg(0);
  if (!in.read(text.data(), size)) throw Error(path.string() + ": read error");
  return parse_json(text, path.string(), limits);
}

}  // namespace fastvlm
