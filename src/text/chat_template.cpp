#include "text/chat_template.h"

#include "core/error.h"

namespace fastvlm::text {
namespace {

constexpr std::string_view kTurnStart = "<|im_start|>";
constexpr std::string_view kTurnEnd = "<|im_end|>\n";
constexpr std::string_view kGenerationPrompt = "<|im_start|>assistant\n";

void append_turn(std::string& prompt, const ChatMessage& message) {
  if (message.role != "user" && message.role != "assistant") {
    throw Error("chat message role \"" + message.role + "\" is not supported (expected user or assistant)");
  }
  if (message.has_image && message.role != "user") throw Error("only a user message can carry an image");
  prompt += kTurnStart;
  prompt += message.role;
  prompt += '\n';
  if (message.has_image) {
    prompt += kImagePlaceholder;
    prompt += '\n';
  }
  prompt += message.content;
  prompt += kTurnEnd;
}

}  // namespace

std::string render_chat_prompt(std::string_view system, std::span<const ChatMessage> messages,
                               bool add_generation_prompt) {
  std::string prompt;
  prompt += kTurnStart;
  prompt += "system\n";
  prompt += system;
  prompt += kTurnEnd;
  for (const ChatMessage& message : messages) append_turn(prompt, message);
  if (add_generation_prompt) prompt += kGenerationPrompt;
  return prompt;
}

std::string render_chat_continuation(const ChatMessage& user_message) {
  if (user_message.role != "user") throw Error("a conversation continues with a user message, not \"" + user_message.role + "\"");
  std::string continuation(kTurnEnd);
  append_turn(continuation, user_message);
  continuation += kGenerationPrompt;
  return continuation;
}

std::vector<int32_t> tokenize_prompt(const Tokenizer& tokenizer, std::string_view prompt_text) {
  std::vector<int32_t> ids;
  for (size_t chunk_start = 0;;) {
    const size_t marker = prompt_text.find(kImagePlaceholder, chunk_start);
    const std::vector<int32_t> chunk_ids = tokenizer.encode(prompt_text.substr(chunk_start, marker - chunk_start));
    ids.insert(ids.end(), chunk_ids.begin(), chunk_ids.end());
    if (marker == std::string_view::npos) return ids;
    ids.push_back(kImageMarker);
    chunk_start = marker + kImagePlaceholder.size();
  }
}

}  // namespace fastvlm::text
