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

json usage_json(const Generation& generation) {
  const int completion_tokens = int(generation.token_ids.size());
  return {{"prompt_tokens", generation.prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", generation.prompt_tokens + completion_tokens}};
}

json timings_json(const Timings& t) {
  return {{"preprocess_ms", t.preprocess_ms}, {"vision_ms", t.vision_ms},   {"projector_ms", t.projector_ms},
          {"prefill_ms", t.prefill_ms},       {"ttft_ms", t.ttft_ms},       {"decode_ms_per_token", t.decode_ms_per_token},
          {"image_cache_hit", t.image_cache_hit}};
}

static json nullable(const char* text) { return text ? json(text) : json(nullptr); }

json completion_json(const CompletionId& id, const Generation& generation) {
  json message = {{"role", "assistant"}, {"content", generation.text}};
  return {{"id", id.id},
          {"object", "chat.completion"},
          {"created", id.created},
          {"model", id.model},
          {"choices", json::array({{{"index", 0},
                                    {"message", std::move(message)},
                                    {"logprobs", nullptr},
                                    {"finish_reason", nullable(finish_reason(generation.stop_reason))}}})},
          {"usage", usage_json(generation)},
          {"timings", timings_json(generation.timings)}};
}

json chunk_json(const CompletionId& id, json delta, const char* reason) {
  return {{"id", id.id},
          {"object", "chat.completion.chunk"},
          {"created", id.created},
          {"model", id.model},
          {"choices", json::array({{{"index", 0},
                                    {"delta", std::move(delta)},
                                    {"logprobs", nullptr},
                                    {"finish_reason", nullable(reason)}}})}};
}

json usage_chunk_json(const CompletionId& id, const Generation& generation) {
  return {{"id", id.id},
          {"object", "chat.completion.chunk"},
          {"created", id.created},
          {"model", id.model},
          {"choices", json::array()},
          {"usage", usage_json(generation)},
          {"timings", timings_json(generation.timings)}};
}

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace fastvlm::server
