#include "io/config_keys.h"

#include <cmath>

#include "core/error.h"

namespace fastvlm {

using nlohmann::json;

ConfigKeys::ConfigKeys(const json& object, std::filesystem::path file, std::string prefix)
    : object_(object), file_(std::move(file)), prefix_(std::move(prefix)) {
  if (!object_.is_object()) throw Error(file_.string() + ": expected a JSON object" +
                                        (prefix_.empty() ? "" : " at '" + prefix_.substr(0, prefix_.size() - 1) + "'"));
}

bool ConfigKeys::has(const char* key) const { return object_.contains(key) && !object_[key].is_null(); }

ConfigKeys ConfigKeys::nested(const char* key) const {
  if (!has(key) || !object_[key].is_object()) fail(key, "an object");
  return ConfigKeys(object_[key], file_, prefix_ + key + ".");
}

void ConfigKeys::fail(const char* key, const std::string& expected) const {
  std::string got = has(key) ? object_[key].dump() : "nothing";
  if (got.size() > 80) got = got.substr(0, 77) + "...";
  throw Error(file_.string() + ": key '" + prefix_ + key + "': expected " + expected + ", got " + got);
}

namespace {

std::string integer_range(int min_value, int max_value) {
  return "an integer in [" + std::to_string(min_value) + ", " + std::to_string(max_value) + "]";
}

}  // namespace

int ConfigKeys::integer(const char* key, int fallback, int min_value, int max_value) const {
  if (!has(key)) return fallback;
  const json& v = object_[key];
  // A number_unsigned above INT64_MAX reads as negative through get<int64_t>(), so it fails too.
  if (!v.is_number_integer() || v.get<int64_t>() < min_value || v.get<int64_t>() > max_value)
    fail(key, integer_range(min_value, max_value));
  return v.get<int>();
}

int ConfigKeys::required_integer(const char* key, int min_value, int max_value) const {
  if (!has(key)) fail(key, integer_range(min_value, max_value));
  return integer(key, 0, min_value, max_value);
}

double ConfigKeys::number(const char* key, double fallback, double max_value) const {
  if (!has(key)) return fallback;
  const json& v = object_[key];
  if (!v.is_number() || !(v.get<double>() > 0) || !(v.get<double>() <= max_value) || !std::isfinite(v.get<double>()))
    fail(key, max_value == HUGE_VAL ? "a positive number" : "a positive number up to " + json(max_value).dump());
  return v.get<double>();
}

double ConfigKeys::required_number(const char* key) const {
  if (!has(key)) fail(key, "a positive number");
  return number(key, 0);
}

bool ConfigKeys::boolean(const char* key, bool fallback) const {
  if (!has(key)) return fallback;
  if (!object_[key].is_boolean()) fail(key, "true or false");
  return object_[key].get<bool>();
}

std::string ConfigKeys::string(const char* key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  if (!object_[key].is_string()) fail(key, "a string");
  return object_[key].get<std::string>();
}

std::vector<int> ConfigKeys::integers(const char* key) const {
  if (!has(key)) return {};
  const json& v = object_[key];
  std::vector<int> out;
  auto take = [&](const json& x) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > (1 << 30))
      fail(key, "a non-negative integer or a list of them");
    out.push_back(x.get<int>());
  };
  if (v.is_array()) {
    for (const auto& x : v) take(x);
  } else {
    take(v);
  }
  return out;
}

}  // namespace fastvlm
