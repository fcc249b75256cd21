#pragma once
// FastVLM's `qwen_2` conversation as src/vlm/engine.cpp calls it: thin forwards to
// ChatFormat::by_name("fastvlm") (text/chat_format.h), which holds the markup. They go once the engine
// renders through ChatFormat itself.
#include <span>
#include <string>
#include <string_view>

#include "text/chat_format.h"

namespace fastvlm::text {

inline constexpr std::string_view kDefaultSystemPrompt = kFastVlmSystemPrompt;
using ChatMessage = ChatTurn;  // role "user" or "assistant": the system prompt is passed on its own

// The fastvlm rendering of a system turn holding `system`, then `messages`. Throws fastvlm::Error for a
// role other than user/assistant in `messages`, or an image on an assistant turn.
std::string render_chat_prompt(std::string_view system, std::span<const ChatMessage> messages,
                               bool add_generation_prompt = true);

// ChatFormat::render_continuation of the fastvlm format: <|im_end|>\n, the new user turn and the
// generation prompt. The full prompt for the whole conversation tokenizes to the same ids, because
// <|im_end|> is an added token that splits the text.
std::string render_chat_continuation(const ChatMessage& user_message);

}  // namespace fastvlm::text
