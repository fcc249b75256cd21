#include "server/openai_format.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>

namespace fastvlm::server {

using nlohmann::json;

CompletionId new_completion_id(const std::string& model) {
  // Unique per process run: a random prefix drawn once, then a counter.
  static const uint64_t run_prefix = (uint64_t(std::random_device{}()) << 32) | std::random_device{}();
  static std::atomic<uint64_t> counter{0};
  char id[48];
  std::snprintf(id, sizeof id, "chatcmpl-%016llx%08llx", (unsigned long long)run_prefix,
                (unsigned long long)counter.fetch_add(1));
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return {id, std::chrono::duration_cast<std::chrono::seconds>(now).count(), model};
}

const char* finish_reason(StopReason reason) {
  switch (reason) {
    case StopReason::EndOfTurn:
    case StopReason::StopString:
      return "stop";
    case StopReason::MaxTokens:
      return "length";
    case StopReason::Cancelled:
      break;
  }
  return nullptr;
}

// The whole prompt counted once (as OpenAI and llama-server count it, with the part read from the KV cache
// in prompt_tokens_details), the completion tokens of every choice.
json usage_json(const std::vector<Generation>& choices) {
  int completion_tokens = 0;
  for (const Generation& choice : choices) completion_tokens += int(choice.token_ids.size());
  const Generation& first = choices.front();
  const int prompt_tokens = first.prompt_tokens + first.cached_tokens;
  return {{"prompt_tokens", prompt_tokens},
          {"prompt_tokens_details", {{"cached_tokens", first.cached_tokens}}},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json timings_json(const Timings& t) {
  return {{"preprocess_ms", t.preprocess_ms}, {"vision_ms", t.vision_ms},   {"projector_ms", t.projector_ms},
          {"prefill_ms", t.prefill_ms},       {"ttft_ms", t.ttft_ms},       {"decode_ms_per_token", t.decode_ms_per_token},
          {"image_cache_hit", t.image_cache_hit}};
}

static json nullable(const char* text) { return text ? json(text) : json(nullptr); }

json logprobs_json(const Generation& generation, bool requested, const TokenSpeller& token_bytes) {
  if (!requested) return nullptr;
  // `token` is the token's bytes as text (a token that splits a UTF-8 character shows U+FFFD once
  // dumped); `bytes` are exact.
  auto entry = [&](int32_t id, float logprob) {
    const std::string bytes = token_bytes(id);
    json values = json::array();
    for (char c : bytes) values.push_back(int(uint8_t(c)));
    return json{{"token", bytes}, {"logprob", logprob}, {"bytes", std::move(values)}};
  };
  json content = json::array();
  for (const TokenLogprob& token : generation.logprobs) {
    json item = entry(token.id, token.logprob);
    json top = json::array();
    for (const auto& [id, logprob] : token.top) top.push_back(entry(id, logprob));
    item["top_logprobs"] = std::move(top);
    content.push_back(std::move(item));
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

json completion_json(const CompletionId& id, const std::vector<Generation>& generations,
                     const std::vector<json>& logprobs) {
  json choices = json::array();
  for (size_t i = 0; i < generations.size(); ++i) {
    const Generation& generation = generations[i];
    choices.push_back({{"index", i},
                       {"message", {{"role", "assistant"}, {"content", generation.text}}},
                       {"logprobs", logprobs[i]},
                       {"finish_reason", nullable(finish_reason(generation.stop_reason))}});
  }
  const Generation& first = generations.front();
  return {{"id", id.id},
          {"object", "chat.completion"},
          {"created", id.created},
          {"model", id.model},
          {"choices", std::move(choices)},
          {"usage", usage_json(generations)},
          {"timings", timings_json(first.timings)}};
}

json chunk_json(const CompletionId& id, int index, json delta, const char* reason, json logprobs) {
  return {{"id", id.id},
          {"object", "chat.completion.chunk"},
          {"created", id.created},
          {"model", id.model},
          {"choices", json::array({{{"index", index},
                                    {"delta", std::move(delta)},
                                    {"logprobs", std::move(logprobs)},
                                    {"finish_reason", nullable(reason)}}})}};
}

json usage_chunk_json(const CompletionId& id, const std::vector<Generation>& choices) {
  return {{"id", id.id},
          {"object", "chat.completion.chunk"},
          {"created", id.created},
          {"model", id.model},
          {"choices", json::array()},
          {"usage", usage_json(choices)},
          {"timings", timings_json(choices.front().timings)}};
}

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace fastvlm::server
