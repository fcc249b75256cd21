#pragma once
// Turns the JSON body of an OpenAI `POST /v1/chat/completions` into the engine's conversation and
// generation options. Everything a client can get wrong is reported here as a 400 ApiError naming the
// offending field, before any model work starts.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fastvlm/fastvlm.hpp"

namespace fastvlm::server {

struct RequestPolicy {
  // Local image paths (file:///... or /...) are accepted only inside this directory; none: refused.
  std::optional<std::filesystem::path> allowed_image_dir;
  int default_max_tokens = 256;  // when the request names neither max_tokens nor max_completion_tokens
};

struct ChatRequest {
  std::string model;
  std::vector<ChatMessage> conversation;  // ends with a user message
  GenerateOptions generate;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk carrying `usage`
};

ChatRequest parse_chat_request(std::string_view body, const RequestPolicy& policy);

}  // namespace fastvlm::server
