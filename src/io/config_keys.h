#pragma once
// Typed access to the keys of a JSON object read from a model file (config.json, generation_config.json,
// preprocessor_config.json), with one-line errors naming the file, the key and what was expected. Every
// model family parses its config through this, so bad values read the same whatever the model.
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace fastvlm {

class ConfigKeys {
 public:
  // `prefix` is prepended to key names in messages ("text_config." for a nested object).
  ConfigKeys(const nlohmann::json& object, std::filesystem::path file, std::string prefix = "");

  bool has(const char* key) const;  // present and not null
  const nlohmann::json& at(const char* key) const { return object_[key]; }
  const nlohmann::json& object() const { return object_; }
  const std::filesystem::path& file() const { return file_; }
  // Keys of a nested object, with the prefix extended; fails unless `key` holds an object.
  ConfigKeys nested(const char* key) const;

  [[noreturn]] void fail(const char* key, const std::string& expected) const;

  // Integers lie in [min_value, max_value]; the default ceiling 2^30 keeps sums and doublings within int.
  // Keys that size memory or enter products pass a ceiling that means something for that key.
  static constexpr int kMaxInteger = 1 << 30;
  int integer(const char* key, int fallback, int min_value = 0, int max_value = kMaxInteger) const;
  int required_integer(const char* key, int min_value = 1, int max_value = kMaxInteger) const;
  double number(const char* key, double fallback, double max_value = HUGE_VAL) const;  // positive, finite
  double required_number(const char* key) const;          // positive
  bool boolean(const char* key, bool fallback) const;
  std::string string(const char* key, const std::string& fallback) const;
  // An integer or a list of integers (eos_token_id comes in both forms).
  std::vector<int> integers(const char* key) const;

 private:
  const nlohmann::json& object_;
  std::filesystem::path file_;
  std::string prefix_;
};

}  // namespace fastvlm
