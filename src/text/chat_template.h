#pragma once
// FastVLM's `qwen_2` conversation template (LLaVA's conv_qwen_2, ChatML markup) and the reference's
// prompt tokenisation: the prompt is cut at each literal "<image>", every piece is tokenized on its
// own and kImageMarker stands between the pieces where the image embeddings go. Tokenizing the pieces
// separately matters: "user\n" + "\nDescribe" gives two "\n" tokens, not the merged "\n\n".
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"

namespace fastvlm::text {

inline constexpr int32_t kImageMarker = -200;
inline constexpr std::string_view kImagePlaceholder = "<image>";
inline constexpr std::string_view kDefaultSystemPrompt = "You are a helpful assistant.";

struct ChatMessage {
  std::string role;  // "user" or "assistant"
  std::string content;
  bool has_image = false;  // a user turn with an image gets "<image>\n" before its text
};

// <|im_start|>system\n{system}<|im_end|>\n, then <|im_start|>{role}\n{content}<|im_end|>\n per message,
// then <|im_start|>assistant\n when add_generation_prompt. Throws fastvlm::Error for a role other
// than user/assistant, or an image on an assistant turn.
std::string render_chat_prompt(std::string_view system, std::span<const ChatMessage> messages,
                               bool add_generation_prompt = true);

// What follows an assistant answer whose text (without its <|im_end|>) is already in the KV cache:
// <|im_end|>\n, the new user turn, and the generation prompt. The full prompt for the whole
// conversation tokenizes to the same ids, because <|im_end|> is an added token that splits the text.
std::string render_chat_continuation(const ChatMessage& user_message);

// The ids of a rendered prompt with kImageMarker wherever the text has "<image>".
std::vector<int32_t> tokenize_prompt(const Tokenizer& tokenizer, std::string_view prompt_text);

}  // namespace fastvlm::text
