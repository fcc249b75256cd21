#pragma once
// Chat formats: the prompt markup of a model family, recognised from the Jinja `chat_template` in
// tokenizer_config.json by distinctive substrings (as llama.cpp's llm_chat_detect_template does) and
// rendered natively, without a Jinja interpreter. Each family renders exactly what Hugging Face's
// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` renders with that family's
// official template, bos/eos text included where the template writes them.
//
// Also the reference's prompt tokenisation: the prompt is cut at each literal "<image>", every piece is
// tokenized on its own and kImageMarker stands between the pieces where the image embeddings go.
// Tokenizing the pieces separately matters: "user\n" + "\nDescribe" gives two "\n" tokens, not the
// merged "\n\n".
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"

namespace fastvlm::text {

inline constexpr int32_t kImageMarker = -200;
inline constexpr std::string_view kImagePlaceholder = "<image>";
// The system prompt of FastVLM's conversation template (LLaVA's conv_qwen_2).
inline constexpr std::string_view kFastVlmSystemPrompt = "You are a helpful assistant.";

struct ChatTurn {
  std::string role;  // system, user or assistant
  std::string content;
  bool has_image = false;  // a user turn with an image gets "<image>\n" before its text
};

// A rendered prompt and the ranges of it that are message text rather than the format's markup.
struct RenderedPrompt {
  std::string text;
  std::vector<TextRange> message_text;  // sorted, disjoint
};

class ChatFormat {
 public:
  enum class Family { ChatML, Llama2, Llama3, DeepSeek, Phi3, FastVlm };  // in names() order

  // "chatml", "llama2", "llama3", "deepseek", "phi3" or "fastvlm" (FastVLM's qwen_2: ChatML with one
  // leading system turn, defaulting to kFastVlmSystemPrompt). Only "fastvlm" has a default system
  // prompt here: the others take theirs from a template (from_template). bos/eos are the tokenizer's
  // token texts, written where the family's template writes bos_token/eos_token.
  static ChatFormat by_name(std::string_view name, std::string bos_token = "", std::string eos_token = "");
  // Recognises the family of a Jinja chat_template and its default system prompt (the literal a ChatML
  // template writes as "<|im_start|>system\n...<|im_end|>"). Throws fastvlm::Error when no family
  // matches. A `[INST]` template is llama2 only with Llama-2's <<SYS>> block: Mistral's variants place
  // bos, spaces and eos differently and would be rendered wrongly.
  static ChatFormat from_template(std::string_view jinja, std::string bos_token, std::string eos_token);
  static std::vector<std::string> names();

  Family family() const { return family_; }
  const std::string& name() const { return name_; }
  const std::string& default_system_prompt() const { return default_system_prompt_; }

  // Renders the whole conversation. When the first turn is not a system turn, default_system_prompt()
  // goes first if non-empty (as the templates do). Throws fastvlm::Error for a role the format cannot
  // express (llama2: a system turn after the first, or turns not alternating user/assistant from a user
  // turn; fastvlm: a system turn after the first), an image on a non-user turn, or text that is not
  // valid UTF-8 where the template strips whitespace. A user turn with has_image gets
  // kImagePlaceholder + "\n" before its text. llama2's template has no generation prompt: its
  // rendering ends with " [/INST]" either way.
  std::string render(std::span<const ChatTurn> turns, bool add_generation_prompt = true) const;
  // The same, with the byte ranges that hold the turns' own text (what tokenize_prompt must read as plain
  // text: no special tokens, no image placeholders in it). Text holding U+FDD0 or U+FDD1, the noncharacters
  // that mark those ranges while rendering, is an Error.
  RenderedPrompt render_marked(std::span<const ChatTurn> turns, bool add_generation_prompt = true) const;

  // Strings that end an assistant turn in this format ("<|im_end|>", "<|eot_id|>", "<|end|>", eos);
  // the engine maps those that are single tokens to stop ids.
  const std::vector<std::string>& end_of_turn_tokens() const { return end_of_turn_tokens_; }

 private:
  ChatFormat(Family family, std::string bos_token, std::string eos_token, std::string default_system_prompt);
  struct Turn;
  void append_turn(std::string& prompt, const Turn& turn, size_t index) const;

  Family family_;
  std::string name_;
  std::string bos_token_, eos_token_;
  std::string default_system_prompt_;
  std::vector<std::string> end_of_turn_tokens_;
};

// The ids of a prompt with kImageMarker wherever the text has "<image>". A raw prompt is tokenized as Hugging
// Face does (special tokens recognised anywhere); a rendered chat reads its message text as plain text.
std::vector<int32_t> tokenize_prompt(const Tokenizer& tokenizer, std::string_view prompt_text);
std::vector<int32_t> tokenize_prompt(const Tokenizer& tokenizer, const RenderedPrompt& prompt);

}  // namespace fastvlm::text
