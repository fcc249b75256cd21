#include "text/chat_format.h"

#include <algorithm>
#include <iterator>
#include <optional>

#include "core/error.h"
#include "text/unicode.h"

namespace fastvlm::text {
namespace {

using Family = ChatFormat::Family;

struct FamilySpec {
  Family family;
  std::string_view name;
  std::string_view end_of_turn;        // the marker closing every turn; empty where eos alone closes a turn
  std::string_view generation_prompt;  // what add_generation_prompt appends
};

// Indexed by Family. FastVLM's format is only chosen by name: its template is ChatML's.
constexpr FamilySpec kFamilies[] = {
    {Family::ChatML, "chatml", "<|im_end|>", "<|im_start|>assistant\n"},
    {Family::Llama2, "llama2", "", ""},
    {Family::Llama3, "llama3", "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n"},
    {Family::DeepSeek, "deepseek", "", "Assistant:"},
    {Family::Phi3, "phi3", "<|end|>", "<|assistant|>\n"},
    {Family::FastVlm, "fastvlm", "<|im_end|>", "<|im_start|>assistant\n"},
};

constexpr bool indexed_by_family() {
  for (size_t i = 0; i < std::size(kFamilies); ++i)
    if (kFamilies[i].family != Family(i)) return false;
  return true;
}
static_assert(indexed_by_family());

const FamilySpec& spec_of(Family family) { return kFamilies[size_t(family)]; }

std::string join_names(bool detectable_only) {
  std::string joined;
  for (const FamilySpec& spec : kFamilies) {
    if (detectable_only && spec.family == Family::FastVlm) continue;
    if (!joined.empty()) joined += ", ";
    joined += spec.name;
  }
  return joined;
}

bool contains(std::string_view text, std::string_view piece) { return text.find(piece) != std::string_view::npos; }

// Which family a template is, by markup no other family writes. Order matters only for templates that
// mix markups, which none of the official ones do.
std::optional<Family> detect_family(std::string_view jinja) {
  if (contains(jinja, "<|im_start|>")) return Family::ChatML;
  if (contains(jinja, "<|start_header_id|>")) return Family::Llama3;
  if (contains(jinja, "<|user|>") && contains(jinja, "<|assistant|>") && contains(jinja, "<|end|>")) return Family::Phi3;
  if (contains(jinja, "[INST]") && contains(jinja, "<<SYS>>")) return Family::Llama2;
  if (contains(jinja, "User: ") && contains(jinja, "Assistant:")) return Family::DeepSeek;
  return std::nullopt;
}

// The text of the body of a Jinja string literal with its escapes resolved, or nullopt when `body` is
// not literal text alone: an unescaped quote ends the literal (as before `+ messages[0]['content']`)
// and braces mean template code.
std::optional<std::string> literal_text(std::string_view body) {
  std::string text;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c == '\'' || c == '"' || c == '{' || c == '}') return std::nullopt;
    if (c == '\\' && i + 1 < body.size()) {
      const char escaped = body[++i];
      text += escaped == 'n' ? '\n' : escaped == 't' ? '\t' : escaped;
    } else {
      text += c;
    }
  }
  return text;
}

// A ChatML template's default system prompt: the literal it writes as
// '<|im_start|>system\n<prompt><|im_end|>' for conversations without a system turn. Occurrences that
// splice in the conversation's own system turn are not literal and are skipped. The newline after the
// role is a Jinja escape or, when tokenizer_config.json spelled it "\n", the character itself.
std::string chatml_default_system_prompt(std::string_view jinja) {
  constexpr std::string_view kOpen = "<|im_start|>system", kClose = "<|im_end|>";
  for (size_t at = jinja.find(kOpen); at != std::string_view::npos; at = jinja.find(kOpen, at + 1)) {
    std::string_view rest = jinja.substr(at + kOpen.size());
    if (rest.starts_with("\\n")) {
      rest.remove_prefix(2);
    } else if (rest.starts_with('\n')) {
      rest.remove_prefix(1);
    } else {
      continue;
    }
    const size_t end = rest.find(kClose);
    if (end == std::string_view::npos) break;
    if (std::optional<std::string> prompt = literal_text(rest.substr(0, end)); prompt && !prompt->empty()) return *prompt;
  }
  return "";
}

// Python's str.isspace(), which the templates' `.strip()` and `| trim` use: Unicode White_Space plus
// the ASCII separators U+001C..U+001F.
bool is_python_space(char32_t c) { return is_whitespace(c) || (c >= 0x1C && c <= 0x1F); }

// Python's str.strip() (or only its left or right half).
std::string_view strip(std::string_view text, bool left = true, bool right = true) {
  if (const std::optional<size_t> offset = find_invalid_utf8(text))
    throw Error("chat turn text is not valid UTF-8 (byte " + std::to_string(*offset) + ")");
  size_t begin = text.size(), end = 0;
  for (size_t pos = 0; pos < text.size();) {
    const size_t start = pos;
    if (!is_python_space(next_code_point(text, pos))) {
      begin = std::min(begin, start);
      end = pos;
    }
  }
  if (begin >= end) return {};
  return text.substr(left ? begin : 0, (right ? end : text.size()) - (left ? begin : 0));
}

// While rendering, message text sits between these two noncharacters; render_marked() takes them out and
// keeps where they were.
constexpr std::string_view kTextOpen = "\xEF\xB7\x90";   // U+FDD0
constexpr std::string_view kTextClose = "\xEF\xB7\x91";  // U+FDD1

std::string marked(std::string_view text) {
  if (contains(text, kTextOpen) || contains(text, kTextClose))
    throw Error("chat turn text contains U+FDD0 or U+FDD1, noncharacters reserved by this engine");
  std::string out(kTextOpen);
  out += text;
  out += kTextClose;
  return out;
}

}  // namespace

ChatFormat::ChatFormat(Family family, std::string bos_token, std::string eos_token, std::string default_system_prompt)
    : family_(family),
      name_(spec_of(family).name),
      bos_token_(std::move(bos_token)),
      eos_token_(std::move(eos_token)),
      default_system_prompt_(std::move(default_system_prompt)) {
  const std::string_view end_of_turn = spec_of(family).end_of_turn;
  if (!end_of_turn.empty()) end_of_turn_tokens_.emplace_back(end_of_turn);
  // Qwen2-Instruct's eos is <|im_end|> itself; a base model's differs and also ends a turn.
  if (!eos_token_.empty() && eos_token_ != end_of_turn) end_of_turn_tokens_.push_back(eos_token_);
}

ChatFormat ChatFormat::by_name(std::string_view name, std::string bos_token, std::string eos_token) {
  for (const FamilySpec& spec : kFamilies) {
    if (spec.name != name) continue;
    return ChatFormat(spec.family, std::move(bos_token), std::move(eos_token),
                      spec.family == Family::FastVlm ? std::string(kFastVlmSystemPrompt) : std::string());
  }
  throw Error("unknown chat format \"" + std::string(name) + "\"; known formats: " + join_names(false));
}

ChatFormat ChatFormat::from_template(std::string_view jinja, std::string bos_token, std::string eos_token) {
  const std::optional<Family> family = detect_family(jinja);
  if (!family)
    throw Error("unrecognised chat_template; known formats: " + join_names(true) + " (choose one with --chat-format)");
  return ChatFormat(*family, std::move(bos_token), std::move(eos_token),
                    *family == Family::ChatML ? chatml_default_system_prompt(jinja) : std::string());
}

std::vector<std::string> ChatFormat::names() {
  std::vector<std::string> names;
  for (const FamilySpec& spec : kFamilies) names.emplace_back(spec.name);
  return names;
}

// A turn as the format writes it: markup before the text (Llama 2's <<SYS>> block, which holds the system
// text), the image placeholder, then the text.
struct ChatFormat::Turn {
  std::string role;
  std::string prefix;  // already marked where it holds message text
  bool has_image = false;
  std::string content;

  // What the template writes for the turn's content; `strip`: as `.strip()` / `| trim` leave it (on the
  // whole, so the text loses leading space only when nothing precedes it).
  std::string body(bool strip_ends = false) const {
    const std::string head = prefix + (has_image ? std::string(kImagePlaceholder) + "\n" : "");
    const std::string_view text = strip_ends ? strip(content, head.empty(), true) : std::string_view(content);
    // With no text left, the strip reaches into what precedes it.
    if (strip_ends && text.empty()) return std::string(strip(head, false, true));
    return head + marked(text);
  }
};

std::string ChatFormat::render(std::span<const ChatTurn> turns, bool add_generation_prompt) const {
  return render_marked(turns, add_generation_prompt).text;
}

RenderedPrompt ChatFormat::render_marked(std::span<const ChatTurn> turns, bool add_generation_prompt) const {
  std::vector<Turn> conversation;
  conversation.reserve(turns.size() + 1);
  if (!default_system_prompt_.empty() && (turns.empty() || turns.front().role != "system"))
    conversation.push_back({"system", "", false, default_system_prompt_});
  for (const ChatTurn& turn : turns) {
    if (turn.role != "system" && turn.role != "user" && turn.role != "assistant")
      throw Error("chat turn role \"" + turn.role + "\" is not supported (expected system, user or assistant)");
    if (turn.has_image && turn.role != "user") throw Error("only a user turn can carry an image, not a " + turn.role + " turn");
    conversation.push_back({turn.role, "", turn.has_image, turn.content});
  }
  // Llama 2 has no system turn: its template writes the system text in a <<SYS>> block at the start of
  // the first turn after it (and nothing when no turn follows).
  if (family_ == Family::Llama2 && !conversation.empty() && conversation.front().role == "system") {
    const std::string system_block = "<<SYS>>\n" + marked(conversation.front().content) + "\n<</SYS>>\n\n";
    conversation.erase(conversation.begin());
    if (!conversation.empty()) conversation.front().prefix = system_block;
  }

  std::string prompt = family_ == Family::DeepSeek ? bos_token_ : std::string();
  for (size_t i = 0; i < conversation.size(); ++i) append_turn(prompt, conversation[i], i);
  if (add_generation_prompt) {
    prompt += spec_of(family_).generation_prompt;
  } else if (family_ == Family::Phi3) {
    prompt += eos_token_;  // Phi-3's template closes a conversation without a generation prompt with eos
  }

  RenderedPrompt rendered;
  rendered.text.reserve(prompt.size());
  for (size_t pos = 0; pos < prompt.size();) {
    const size_t open = prompt.find(kTextOpen, pos);
    rendered.text.append(prompt, pos, open == std::string::npos ? std::string::npos : open - pos);
    if (open == std::string::npos) break;
    const size_t close = prompt.find(kTextClose, open);
    const size_t begin = rendered.text.size();
    rendered.text.append(prompt, open + kTextOpen.size(), close - open - kTextOpen.size());
    if (rendered.text.size() > begin) rendered.message_text.push_back({begin, rendered.text.size()});
    pos = close + kTextClose.size();
  }
  return rendered;
}

void ChatFormat::append_turn(std::string& prompt, const Turn& turn, size_t index) const {
  const std::string& role = turn.role;
  switch (family_) {
    case Family::FastVlm:
      // LLaVA's conversation has a single system slot, before the messages.
      if (role == "system" && index != 0) throw Error("the fastvlm chat format has one system turn, at the start");
      [[fallthrough]];
    case Family::ChatML:
      prompt += "<|im_start|>" + role + "\n" + turn.body() + "<|im_end|>\n";
      return;
    case Family::Llama2:
      // The template raises unless the turns alternate from a user turn (a later system turn it would drop).
      if (role == "system" || (role == "user") != (index % 2 == 0))
        throw Error("the llama2 chat format needs one optional system turn, then turns alternating user/assistant "
                    "starting with user; turn " + std::to_string(index) + " is " + role);
      if (role == "user") {
        prompt += bos_token_ + "[INST] " + turn.body(true) + " [/INST]";
      } else {
        prompt += " " + turn.body(true) + " " + eos_token_;
      }
      return;
    case Family::Llama3:
      if (index == 0) prompt += bos_token_;
      prompt += "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + turn.body(true) + "<|eot_id|>";
      return;
    case Family::DeepSeek:
      if (role == "user") prompt += "User: " + turn.body() + "\n\n";
      if (role == "assistant") prompt += "Assistant: " + turn.body() + eos_token_;
      if (role == "system") prompt += turn.body() + "\n\n";
      return;
    case Family::Phi3:
      prompt += "<|" + role + "|>\n" + turn.body() + "<|end|>\n";
      return;
  }
}

std::vector<int32_t> tokenize_prompt(const Tokenizer& tokenizer, std::string_view prompt_text) {
  return tokenize_prompt(tokenizer, RenderedPrompt{std::string(prompt_text), {}});
}

std::vector<int32_t> tokenize_prompt(const Tokenizer& tokenizer, const RenderedPrompt& prompt) {
  const std::string_view text = prompt.text;
  std::vector<int32_t> ids;
  std::vector<TextRange> chunk_ranges;
  auto range = prompt.message_text.begin();
  auto in_message_text = [&](size_t pos) {
    while (range != prompt.message_text.end() && range->end <= pos) ++range;
    return range != prompt.message_text.end() && range->begin <= pos;
  };
  size_t chunk_start = 0;
  auto encode_chunk = [&](size_t chunk_end) {
    // The message ranges inside [chunk_start, chunk_end), relative to the chunk.
    chunk_ranges.clear();
    for (const TextRange& r : prompt.message_text)
      if (r.end > chunk_start && r.begin < chunk_end)
        chunk_ranges.push_back({std::max(r.begin, chunk_start) - chunk_start, std::min(r.end, chunk_end) - chunk_start});
    const std::vector<int32_t> chunk_ids = tokenizer.encode(text.substr(chunk_start, chunk_end - chunk_start), chunk_ranges);
    ids.insert(ids.end(), chunk_ids.begin(), chunk_ids.end());
  };
  for (size_t marker = text.find(kImagePlaceholder); marker != std::string_view::npos;
       marker = text.find(kImagePlaceholder, marker + 1)) {
    if (in_message_text(marker)) continue;  // a user who writes "<image>" means the text
    encode_chunk(marker);
    ids.push_back(kImageMarker);
    chunk_start = marker + kImagePlaceholder.size();
  }
  encode_chunk(text.size());
  return ids;
}

}  // namespace fastvlm::text
