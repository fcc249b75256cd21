#include "vlm/prompt.h"

#include <algorithm>

#include "core/error.h"
#include "text/unicode.h"

namespace fastvlm {

void check_utf8(const std::string& text, const char* what) {
  if (auto offset = text::find_invalid_utf8(text))
    throw Error(std::string(what) + " is not valid UTF-8 (byte " + std::to_string(*offset) + ")");
}

void check_fits(const Engine::Impl& engine, std::span<const int32_t> ids, int images, int capacity) {
  const size_t markers = size_t(std::count(ids.begin(), ids.end(), text::kImageMarker));
  const size_t positions = ids.size() - markers + size_t(images) * engine.info.image_tokens;
  // Only a raw prompt can miss: a chat format places each image itself, and reads "<image>" in a message
  // as text.
  if (markers != size_t(images))
    throw Error("the prompt has " + std::to_string(markers) + " \"<image>\" place(s) for " + std::to_string(images) +
                " image(s): a raw prompt puts each image where it says \"<image>\"");
  if (positions >= size_t(capacity))
    throw Error("prompt of " + std::to_string(positions) + " positions does not fit the context of " +
                std::to_string(capacity) + ": raise --ctx or shorten the prompt");
}

std::vector<int32_t> chat_prompt_ids(const Engine::Impl& engine, std::span<const text::ChatTurn> turns,
                                     const std::optional<std::string>& system_prompt) {
  std::vector<text::ChatTurn> rendered;
  if (system_prompt && (turns.empty() || turns.front().role != "system"))
    rendered.push_back({"system", *system_prompt, false});
  rendered.insert(rendered.end(), turns.begin(), turns.end());
  return text::tokenize_prompt(*engine.tokenizer, engine.chat_format().render_marked(rendered));
}

std::vector<text::ChatTurn> conversation_turns(const std::vector<ChatMessage>& conversation) {
  if (conversation.empty() || conversation.back().role != "user")
    throw Error("the conversation must end with a user message");
  std::vector<text::ChatTurn> turns;
  for (const auto& message : conversation) {
    check_utf8(message.text, ("a " + message.role + " message").c_str());
    turns.push_back({message.role, message.text, message.image.has_value()});
  }
  return turns;
}

std::vector<int32_t> raw_prompt_ids(const Engine::Impl& engine, const std::string& prompt) {
  check_utf8(prompt, "the prompt");
  std::vector<int32_t> ids = text::tokenize_prompt(*engine.tokenizer, prompt);
  const text::TokenizerConfig& tc = engine.tokenizer_config;
  // A raw prompt gets what the tokenizer adds itself (BOS where tokenizer_config asks for it), no more.
  if (tc.add_bos_token && !tc.bos_token.empty()) {
    const int32_t bos = engine.tokenizer->token_to_id(tc.bos_token);
    if (bos >= 0) ids.insert(ids.begin(), bos);
  }
  return ids;
}

}  // namespace fastvlm
