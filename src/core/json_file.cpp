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

namespace {

std::string read_json_text(const std::filesystem::path& path, const JsonLimits& limits) {
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
  return text;
}

// nlohmann's event interface for read_flat_json_object: members of the one top-level object go to the
// callback as they are parsed; anything nested, or another top-level shape, stops the parse.
class FlatObjectReader final : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit FlatObjectReader(const std::function<void(std::string&&, nlohmann::json&&)>& entry) : entry_(entry) {}

  bool null() override { return member(nullptr); }
  bool boolean(bool value) override { return member(value); }
  bool number_integer(number_integer_t value) override { return member(value); }
  bool number_unsigned(number_unsigned_t value) override { return member(value); }
  bool number_float(number_float_t value, const string_t&) override { return member(value); }
  bool string(string_t& value) override { return member(std::move(value)); }
  bool binary(binary_t&) override { return wrong_shape(); }
  bool start_object(std::size_t) override { return in_object_ ? wrong_shape() : (in_object_ = true); }
  bool key(string_t& name) override {
    name_ = std::move(name);
    return true;
  }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return wrong_shape(); }
  bool end_array() override { return wrong_shape(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& error) override {
    error_ = std::string("invalid JSON: ") + error.what();
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool member(nlohmann::json value) {
    if (!in_object_) return wrong_shape();
    entry_(std::move(name_), std::move(value));
    return true;
  }
  bool wrong_shape() {
    error_ = "expected one JSON object of names to scalar values";
    return false;
  }

  const std::function<void(std::string&&, nlohmann::json&&)>& entry_;
  bool in_object_ = false;
  std::string name_, error_;
};

}  // namespace

nlohmann::json read_json_file(const std::filesystem::path& path, const JsonLimits& limits) {
  return parse_json(read_json_text(path, limits), path.string(), limits);
}

void read_flat_json_object(const std::filesystem::path& path,
                           const std::function<void(std::string&& name, nlohmann::json&& value)>& entry,
                           const JsonLimits& limits) {
  const std::string text = read_json_text(path, limits);
  FlatObjectReader reader(entry);
  if (!nlohmann::json::sax_parse(text, &reader)) throw Error(path.string() + ": " + reader.error());
}

}  // namespace fastvlm
