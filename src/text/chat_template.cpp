#include "text/chat_template.h"

#include <vector>


namespace fastvlm::text {
namespace {

const ChatFormat& fastvlm_format() {
  static const ChatFormat format = ChatFormat::by_name("fastvlm");
  return format;
}

}  // namespace

std::string render_chat_prompt(std::string_view system, std::span<const ChatMessage> messages,
                               bool add_generation_prompt) {
  std::vector<ChatTurn> turns{{"system", std::string(system)}};
  turns.insert(turns.end(), messages.begin(), messages.end());
  return fastvlm_format().render(turns, add_generation_prompt);
}

std::string render_chat_continuation(const ChatMessage& user_message) {
  return fastvlm_format().render_continuation(user_message);
}

}  // namespace fastvlm::text
