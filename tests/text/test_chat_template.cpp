// FastVLM's qwen_2 prompt (ChatFormat "fastvlm") against the tiny fixture's golden prompt ids
// (golden/golden.json).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "text/chat_format.h"
#include "text/tokenizer.h"

namespace fastvlm::text {
namespace {

const std::string kTinyModel = std::string(FASTVLM_SHARED_DIR) + "/fixtures/tiny-fastvlm";

class ChatTemplate : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    tokenizer_ = Tokenizer::load(kTinyModel).release();
    std::ifstream file(kTinyModel + "/golden/golden.json");
    golden_ = new nlohmann::json(nlohmann::json::parse(file));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete golden_;
  }
  static const Tokenizer* tokenizer_;
  static const nlohmann::json* golden_;
};
const Tokenizer* ChatTemplate::tokenizer_ = nullptr;
const nlohmann::json* ChatTemplate::golden_ = nullptr;

const ChatFormat kFastVlm = ChatFormat::by_name("fastvlm");
const std::vector<ChatTurn> kDescribeWithImage = {{"user", "Describe the image.", true}};

TEST_F(ChatTemplate, RendersTheGoldenPromptText) {
  EXPECT_EQ(kFastVlm.render(kDescribeWithImage), (*golden_)["prompt_text"].get<std::string>());
}

TEST_F(ChatTemplate, ReproducesTheGoldenPromptIds) {
  const std::vector<int32_t> expected = (*golden_)["prompt_ids"];
  ASSERT_EQ(expected.size(), 25u);
  ASSERT_EQ(expected[14], kImageMarker);
  EXPECT_EQ(tokenize_prompt(*tokenizer_, kFastVlm.render(kDescribeWithImage)), expected);
}

// golden.json's text_only ids are prompt_ids with the -200 dropped: the two chunks around "<image>"
// tokenized separately, so "user\n" and "\nDescribe" give 198 198 rather than the merged "\n\n" (271)
// that tokenizing the prompt text with "<image>" deleted would give.
TEST_F(ChatTemplate, TextOnlyIdsAreThePromptChunksWithoutTheMarker) {
  const std::vector<int32_t> expected = (*golden_)["text_only"]["ids"];
  ASSERT_EQ(expected.size(), 24u);
  std::vector<int32_t> ids = tokenize_prompt(*tokenizer_, kFastVlm.render(kDescribeWithImage));
  std::erase(ids, kImageMarker);
  EXPECT_EQ(ids, expected);

  std::string without_marker = kFastVlm.render(kDescribeWithImage);
  without_marker.erase(without_marker.find(kImagePlaceholder), kImagePlaceholder.size());
  EXPECT_NE(tokenizer_->encode(without_marker), expected);
}

TEST_F(ChatTemplate, MultiTurnHistoryAndSystemPrompt) {
  const std::vector<ChatTurn> conversation = {
      {"system", "Be brief."}, {"user", "What is this?", true}, {"assistant", "A cat."}, {"user", "What colour?"}};
  const std::string expected =
      "<|im_start|>system\nBe brief.<|im_end|>\n"
      "<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n"
      "<|im_start|>assistant\nA cat.<|im_end|>\n"
      "<|im_start|>user\nWhat colour?<|im_end|>\n"
      "<|im_start|>assistant\n";
  EXPECT_EQ(kFastVlm.render(conversation), expected);
  EXPECT_TRUE(kFastVlm.render(conversation, /*add_generation_prompt=*/false)
                  .ends_with("<|im_start|>user\nWhat colour?<|im_end|>\n"));
}

// After the first answer the KV cache holds the first prompt and the answer's ids; the engine renders the
// whole conversation for the next turn and reuses the cached prefix, so those ids must be a prefix of it.
TEST_F(ChatTemplate, TheNextTurnExtendsTheCachedConversation) {
  const std::vector<ChatTurn> first_turn = {{"user", "What is this?", true}};
  const std::string answer = "A cat on a mat.";
  std::vector<int32_t> cached = tokenize_prompt(*tokenizer_, kFastVlm.render(first_turn));
  const std::vector<int32_t> answer_ids = tokenizer_->encode(answer);
  cached.insert(cached.end(), answer_ids.begin(), answer_ids.end());

  const std::vector<ChatTurn> whole = {first_turn[0], {"assistant", answer}, {"user", "What colour is it?"}};
  const std::vector<int32_t> next = tokenize_prompt(*tokenizer_, kFastVlm.render(whole));
  ASSERT_GT(next.size(), cached.size());
  EXPECT_TRUE(std::equal(cached.begin(), cached.end(), next.begin()));
  EXPECT_EQ(next[cached.size()], tokenizer_->token_to_id("<|im_end|>"));
}

TEST_F(ChatTemplate, ImageMarkersSplitTheText) {
  const std::vector<int32_t> ids = tokenize_prompt(*tokenizer_, "<image>a<image><image>");
  EXPECT_EQ(ids, (std::vector<int32_t>{kImageMarker, 64, kImageMarker, kImageMarker}));
  EXPECT_EQ(tokenize_prompt(*tokenizer_, "Hello world"), (std::vector<int32_t>{9707, 1879}));
}

TEST_F(ChatTemplate, RejectsUnknownRolesAndAssistantImages) {
  const std::vector<ChatTurn> late_system = {{"user", "x"}, {"system", "y"}};
  EXPECT_THROW(kFastVlm.render(late_system), Error);
  const std::vector<ChatTurn> tool = {{"tool", "x"}};
  EXPECT_THROW(kFastVlm.render(tool), Error);
  const std::vector<ChatTurn> assistant_image = {{"assistant", "x", true}};
  EXPECT_THROW(kFastVlm.render(assistant_image), Error);
}

}  // namespace
}  // namespace fastvlm::text
