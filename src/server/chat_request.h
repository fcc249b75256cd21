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

// The directory local image paths may name: its canonical path, and the path the operator wrote (absolute,
// normalised), which differs when it goes through a symlink. A client may name a file through either.
struct ImageDirectory {
  std::filesystem::path canonical;
  std::filesystem::path as_written;
  // Throws std::filesystem::filesystem_error when `path` does not exist.
  static ImageDirectory of(const std::filesystem::path& path) {
    return {std::filesystem::canonical(path), std::filesystem::absolute(path).lexically_normal()};
  }
};

struct RequestPolicy {
  // Local image paths (file:///... or /...) are accepted only inside this directory; none: refused.
  std::optional<ImageDirectory> allowed_image_dir;
  int default_max_tokens = 256;  // when the request names neither max_tokens nor max_completion_tokens
  int vocab_size = 0;            // token ids (logit_bias, /detokenize) must be below it
};

struct ChatRequest {
  std::string model;
  std::vector<ChatMessage> conversation;  // ends with a user message
  GenerateOptions generate;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk carrying `usage`
  int n = 1;                   // choices, generated together (a sampled one i with the seed seed + i)
};

ChatRequest parse_chat_request(std::string_view body, const RequestPolicy& policy);

// POST /v1/embeddings: `input` is a string or an array of strings and content parts ({"type": "text"} or
// {"type": "image_url"}); a string that is an image data URL is an image too.
struct EmbeddingsRequest {
  struct Input {
    std::string text;
    std::optional<ImageInput> image;
  };
  std::vector<Input> inputs;
  bool base64 = false;        // encoding_format "base64": little-endian float32, as OpenAI sends
  bool every_token = false;   // pooling "none": one vector per token instead of their mean
  std::string model;
};
EmbeddingsRequest parse_embeddings_request(std::string_view body, const RequestPolicy& policy);

// POST /tokenize {"content", "with_pieces"} and /detokenize {"tokens"}, as llama-server takes them.
struct TokenizeRequest {
  std::string content;
  bool with_pieces = false;
};
TokenizeRequest parse_tokenize_request(std::string_view body);
std::vector<int32_t> parse_detokenize_request(std::string_view body, const RequestPolicy& policy);

}  // namespace fastvlm::server
