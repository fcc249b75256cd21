#pragma once
// A request's prompt as token ids (one kImageMarker per image), checked before any model work: valid
// UTF-8, image places matching the images, and room in the KV cache for the prompt and one answer token.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fastvlm/fastvlm.hpp"
#include "vlm/engine_impl.h"

namespace fastvlm {

// Offsets in the user's own text, before the chat template moves them.
void check_utf8(const std::string& text, const char* what);

// The prompt's image markers match the images, and its positions fit a cache of `capacity` positions.
void check_fits(const Engine::Impl& engine, std::span<const int32_t> ids, int images, int capacity);

// `turns` rendered in the engine's chat format (with `system_prompt` first unless the turns begin with a
// system message; unset: the format's default). Message text is read as text: a user cannot write the
// format's special tokens, nor place an image.
std::vector<int32_t> chat_prompt_ids(const Engine::Impl& engine, std::span<const text::ChatTurn> turns,
                                     const std::optional<std::string>& system_prompt);

// The turns of an OpenAI-style conversation, checked: it ends with a user message, every text is UTF-8.
std::vector<text::ChatTurn> conversation_turns(const std::vector<ChatMessage>& conversation);

// A raw prompt, no chat template: tokenized as it is (special tokens in it included, as Hugging Face
// tokenizers do; BOS first where tokenizer_config.json's add_bos_token asks for it).
std::vector<int32_t> raw_prompt_ids(const Engine::Impl& engine, const std::string& prompt);

}  // namespace fastvlm
