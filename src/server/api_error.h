#pragma once
// Every failure the server reports to a client: an HTTP status plus the fields of OpenAI's error object
// ({"error": {"message", "type", "code"}}), so any OpenAI client shows the message as it would OpenAI's.
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace fastvlm::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string code, const std::string& message)
      : std::runtime_error(message), status_(status), type_(std::move(type)), code_(std::move(code)) {}

  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string type_, code_;
};

// 400 invalid_request_error: the request itself is wrong (its JSON, a field, an image).
inline ApiError invalid_request(std::string code, const std::string& message) {
  return ApiError(400, "invalid_request_error", std::move(code), message);
}

inline nlohmann::json error_json(const std::string& message, const std::string& type, const std::string& code) {
  return {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", code}}}};
}

}  // namespace fastvlm::server
