#include "text/tokenizer_config.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_file.h"

namespace fastvlm::text {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::filesystem::path& file, const char* key, const char* expected) {
  throw Error(file.string() + ": key '" + key + "': expected " + expected);
}

// A special token is written as its text or as an AddedToken object {"content": ...}.
std::string token_text(const json& root, const char* key, const std::filesystem::path& file) {
  if (!root.contains(key) || root[key].is_null()) return "";
  const json& value = root[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  fail(file, key, "a string or an object with a \"content\" string");
}

std::string chat_template(const json& root, const std::filesystem::path& file) {
  if (!root.contains("chat_template") || root["chat_template"].is_null()) return "";
  const json& value = root["chat_template"];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    for (const json& entry : value)
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string())
        return entry["template"].get<std::string>();
  }
  fail(file, "chat_template", "a string or a list of {\"name\", \"template\"} with one named \"default\"");
}

}  // namespace

TokenizerConfig read_tokenizer_config(const std::filesystem::path& dir) {
  const auto file = dir / "tokenizer_config.json";
  TokenizerConfig config;
  if (!std::filesystem::exists(file)) return config;
  const json root = read_json_file(file);
  if (!root.is_object()) throw Error(file.string() + ": expected a JSON object");
  config.chat_template = chat_template(root, file);
  config.bos_token = token_text(root, "bos_token", file);
  config.eos_token = token_text(root, "eos_token", file);
  if (root.contains("add_bos_token") && !root["add_bos_token"].is_null()) {
    if (!root["add_bos_token"].is_boolean()) fail(file, "add_bos_token", "true or false");
    config.add_bos_token = root["add_bos_token"].get<bool>();
  }
  return config;
}

}  // namespace fastvlm::text
