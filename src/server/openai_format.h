#pragma once
// The JSON objects of OpenAI's chat completions API that the server sends back.
#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "fastvlm/fastvlm.hpp"

namespace fastvlm::server {

// Identifies one completion in every object sent for it.
struct CompletionId {
  std::string id;       // "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};
CompletionId new_completion_id(const std::string& model);

// "stop" (end of turn or a stop string), "length" (max_tokens or the context filled), or null while running.
const char* finish_reason(StopReason reason);

nlohmann::json usage_json(const Generation& generation);
nlohmann::json timings_json(const Timings& timings);

// A choice's `logprobs`: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}, or null when
// none were asked for. `token_bytes` spells an id.
using TokenSpeller = std::function<std::string(int32_t)>;
nlohmann::json logprobs_json(const Generation& generation, bool requested, const TokenSpeller& token_bytes);

// The whole answer, one choice per generation of the same prompt: object "chat.completion", with usage
// (the prompt counted once) and (beyond OpenAI, like llama.cpp) the first choice's timings.
nlohmann::json completion_json(const CompletionId& id, const std::vector<Generation>& choices,
                               const std::vector<nlohmann::json>& logprobs);

// One streamed "chat.completion.chunk" for the choice `index`. `delta` is e.g. {"content": "..."};
// a null finish_reason leaves the choice open.
nlohmann::json chunk_json(const CompletionId& id, int index, nlohmann::json delta, const char* finish_reason,
                          nlohmann::json logprobs = nullptr);

// The chunk sent last when stream_options.include_usage is set: no choices, only usage (the prompt
// counted once, the completion tokens of every choice).
nlohmann::json usage_chunk_json(const CompletionId& id, const std::vector<Generation>& choices);

// Serialised for the wire; invalid UTF-8 (which a client can send in its own text) becomes U+FFFD.
std::string dump(const nlohmann::json& value);

}  // namespace fastvlm::server
