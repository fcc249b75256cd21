// Request parsing and base64 on their own, without a server: RFC 4648 vectors and OpenAI request shapes.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "server/api_error.h"
#include "server/base64.h"
#include "server/chat_request.h"

namespace fastvlm::server {
namespace {

std::string decoded(std::string_view text) {
  auto bytes = decode_base64(text);
  EXPECT_TRUE(bytes.has_value()) << text;
  return bytes ? std::string(bytes->begin(), bytes->end()) : std::string();
}

TEST(Base64, DecodesRfc4648TestVectors) {
  EXPECT_EQ(decoded(""), "");
  EXPECT_EQ(decoded("Zg=="), "f");
  EXPECT_EQ(decoded("Zm8="), "fo");
  EXPECT_EQ(decoded("Zm9v"), "foo");
  EXPECT_EQ(decoded("Zm9vYg=="), "foob");
  EXPECT_EQ(decoded("Zm9vYmE="), "fooba");
  EXPECT_EQ(decoded("Zm9vYmFy"), "foobar");
}

TEST(Base64, AcceptsMissingPaddingAndWrappedLines) {
  EXPECT_EQ(decoded("Zm9vYg"), "foob");
  EXPECT_EQ(decoded("Zm9v\r\nYmFy"), "foobar");
  EXPECT_EQ(decoded("/+8="), "\xff\xef");
}

TEST(Base64, RefusesWhatNoEncoderProduces) {
  for (const char* bad : {"Zm9v!", "Z", "Zm9vY", "Zg=a", "Zg===", "Zm9v=", "Zh==", "Zm-_", "Zg=\n=Zg"})
    EXPECT_FALSE(decode_base64(bad).has_value()) << bad;
}

int status_of(std::string_view body, const RequestPolicy& policy = {}) {
  try {
    parse_chat_request(body, policy);
  } catch (const ApiError& e) {
    return e.status();
  }
  return 200;
}

TEST(ChatRequest, ParsesContentPartsAndOptions) {
  ChatRequest request = parse_chat_request(R"({
    "model": "m", "max_completion_tokens": 7, "temperature": 0, "top_p": 0.5, "seed": 42, "stop": ["x", "y"],
    "stream": true, "stream_options": {"include_usage": true},
    "messages": [
      {"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "a"},
                                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,Zm9vYmFy"}},
                                   {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null},
      {"role": "developer", "content": "c"},
      {"role": "user", "content": "d"}]})",
                                           {});
  ASSERT_EQ(request.conversation.size(), 5u);
  EXPECT_EQ(request.conversation[1].text, "a\nb");
  ASSERT_TRUE(request.conversation[1].image.has_value());
  EXPECT_EQ(std::string(request.conversation[1].image->bytes.begin(), request.conversation[1].image->bytes.end()),
            "foobar");
  EXPECT_EQ(request.conversation[3].role, "system");
  EXPECT_EQ(request.generate.max_tokens, 7);
  EXPECT_EQ(request.generate.sampling.temperature, 0.0f);
  EXPECT_EQ(request.generate.sampling.top_p, 0.5f);
  EXPECT_EQ(request.generate.sampling.seed, 42u);
  EXPECT_EQ(request.generate.stop, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(request.stream);
  EXPECT_TRUE(request.include_usage);
}

TEST(ChatRequest, RefusesMalformedRequestsWith400) {
  const char* user = R"("messages": [{"role": "user", "content": "hi"}])";
  auto with = [&](const std::string& fields) { return "{" + std::string(user) + "," + fields + "}"; };
  EXPECT_EQ(status_of(with(R"("max_tokens": 5)")), 200);
  for (const std::string& body : {
           std::string("{"), std::string("[]"), std::string(R"({"messages": []})"), std::string("{}"),
           std::string(R"({"messages": [{"role": "tool", "content": "x"}]})"),
           std::string(R"({"messages": [{"role": "assistant", "content": "x"}]})"),
           std::string(R"({"messages": [{"role": "user"}]})"),
           std::string(R"({"messages": [{"role": "user", "content": [{"type": "audio"}]}]})"),
           with(R"("max_tokens": 0)"), with(R"("max_tokens": 1.5)"), with(R"("max_tokens": "5")"),
           with(R"("temperature": 3)"), with(R"("top_p": -1)"), with(R"("stream": "yes")"), with(R"("n": 0)"),
           with(R"("n": 17)"), with(R"("logprobs": true, "top_logprobs": 21)"),
           with(R"("top_logprobs": 2)"), with(R"("logit_bias": {"-1": 1})"), with(R"("logit_bias": {"abc": 1})"),
           with(R"("logit_bias": [1])"), with(R"("presence_penalty": 3)"), with(R"("frequency_penalty": "1")"),
           with(R"("response_format": {"type": "xml"})"), with(R"("response_format": {"type": "json_schema"})"),
           with(R"("response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "string", "not": {}}}})"),
           with(R"("stop": 5)"), std::string(200, '[') + std::string(200, ']'),
       })
    EXPECT_EQ(status_of(body), 400) << body;
}

TEST(ChatRequest, ReadsStructuredOutputLogprobsPenaltiesAndChoices) {
  RequestPolicy policy;
  policy.vocab_size = 100;
  const ChatRequest request = parse_chat_request(R"({"messages": [{"role": "user", "content": "hi"}], "n": 3,
      "logprobs": true, "top_logprobs": 4, "presence_penalty": 0.5, "frequency_penalty": -1, "logit_bias": {"7": -100},
      "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true,
        "schema": {"type": "object", "properties": {"z": {"type": "integer"}, "a": {"type": "string"}}}}}})",
                                                 policy);
  EXPECT_EQ(request.n, 3);
  EXPECT_EQ(request.generate.logprobs, 4);
  EXPECT_EQ(request.generate.sampling.presence_penalty, 0.5f);
  EXPECT_EQ(request.generate.sampling.frequency_penalty, -1.0f);
  ASSERT_EQ(request.generate.sampling.logit_bias.size(), 1u);
  EXPECT_EQ(request.generate.sampling.logit_bias[0], (std::pair<int32_t, float>{7, -100.0f}));
  // The properties keep the order the client wrote (it is the order they are generated in).
  EXPECT_EQ(request.generate.json_schema, R"({"type":"object","properties":{"z":{"type":"integer"},"a":{"type":"string"}}})");
  EXPECT_EQ(parse_chat_request(R"({"messages": [{"role": "user", "content": "hi"}],
      "response_format": {"type": "json_object"}})", policy).generate.json_schema, R"({"type":"object"})");
  EXPECT_EQ(parse_chat_request(R"({"messages": [{"role": "user", "content": "hi"}], "logprobs": true})", policy)
                .generate.logprobs, 0);
  EXPECT_EQ(parse_chat_request(R"({"messages": [{"role": "user", "content": "hi"}]})", policy).generate.logprobs, -1);
  // Choices stream together, each under its index.
  const ChatRequest streamed =
      parse_chat_request(R"({"messages": [{"role": "user", "content": "hi"}], "n": 2, "stream": true})", policy);
  EXPECT_EQ(streamed.n, 2);
  EXPECT_TRUE(streamed.stream);
}

TEST(ChatRequest, ReadsEmbeddingsAndTokenizerRequests) {
  RequestPolicy policy;
  policy.vocab_size = 100;
  const EmbeddingsRequest request = parse_embeddings_request(
      R"({"input": ["text", "data:image/png;base64,Zm9v", {"type": "text", "text": "part"}], "encoding_format": "base64",
          "pooling": "none"})", policy);
  ASSERT_EQ(request.inputs.size(), 3u);
  EXPECT_EQ(request.inputs[0].text, "text");
  EXPECT_TRUE(request.inputs[1].image.has_value());
  EXPECT_EQ(request.inputs[2].text, "part");
  EXPECT_TRUE(request.base64);
  EXPECT_TRUE(request.every_token);
  for (const char* body : {R"({})", R"({"input": []})", R"({"input": 5})", R"({"input": "x", "encoding_format": "int8"})",
                           R"({"input": "x", "pooling": "max"})", R"({"input": ""})"})
    EXPECT_THROW(parse_embeddings_request(body, policy), ApiError) << body;
  EXPECT_EQ(parse_tokenize_request(R"({"content": "a", "with_pieces": true})").with_pieces, true);
  EXPECT_THROW(parse_tokenize_request(R"({"content": 1})"), ApiError);
  EXPECT_EQ(parse_detokenize_request(R"({"tokens": [1, 99]})", policy), (std::vector<int32_t>{1, 99}));
  EXPECT_THROW(parse_detokenize_request(R"({"tokens": [100]})", policy), ApiError);
  for (const std::string text : {"", "f", "fo", "foo", "foobar", "\xff\x00\x80"}) {
    const std::vector<uint8_t> bytes(text.begin(), text.end());
    EXPECT_EQ(decode_base64(encode_base64(bytes)), bytes) << text;
  }
  EXPECT_EQ(encode_base64(std::vector<uint8_t>{'f', 'o'}), "Zm8=");
}

TEST(ChatRequest, RefusesBadImageUrls) {
  auto image = [](const std::string& url) {
    return R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ")" + url +
           R"("}}]}]})";
  };
  EXPECT_EQ(status_of(image("data:image/png;base64,Zm9v")), 200);
  EXPECT_EQ(status_of(image("data:image/png;base64,Zm9v!!")), 400);
  EXPECT_EQ(status_of(image("data:image/png,Zm9v")), 400);
  EXPECT_EQ(status_of(image("data:text/plain;base64,Zm9v")), 400);
  EXPECT_EQ(status_of(image("https://example.com/cat.png")), 400);
  EXPECT_EQ(status_of(image("file:///etc/passwd")), 400);  // no allowed directory

  RequestPolicy policy;
  policy.allowed_image_dir = ImageDirectory::of(FASTVLM_SHARED_DIR "/fixtures/tiny-fastvlm/golden");
  const std::string inside = policy.allowed_image_dir->canonical.string() + "/image_b_97x131.jpg";
  EXPECT_EQ(status_of(image("file://" + inside), policy), 200);
  EXPECT_EQ(status_of(image(inside), policy), 200);
  EXPECT_EQ(status_of(image(policy.allowed_image_dir->canonical.string() + "/../README.md"), policy), 400);
  EXPECT_EQ(status_of(image("file:///etc/passwd"), policy), 400);
}

// The error for a path outside the allowed directory must not depend on whether that path exists, or a
// client could probe the server's file system; this holds for paths that only leave it through a symlink.
TEST(ChatRequest, LocalPathErrorsDoNotRevealWhetherAFileExists) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(::testing::TempDir()) / ("fastvlm_oracle_" + std::to_string(getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "allowed");
  fs::create_directories(root / "secret");
  { std::ofstream(root / "secret" / "exists.txt") << "x"; }
  fs::create_directory_symlink(root / "secret", root / "allowed" / "escape");
  RequestPolicy policy;
  policy.allowed_image_dir = ImageDirectory::of(root / "allowed");

  // The message with the path the client sent replaced, so two requests' messages can be compared.
  auto refusal = [&](const std::string& path) {
    const std::string body = R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file://)" +
                             path + R"("}}]}]})";
    try {
      parse_chat_request(body, policy);
    } catch (const ApiError& e) {
      std::string message = e.what();
      message.replace(message.find(path), path.size(), "PATH");
      return std::to_string(e.status()) + " " + e.code() + " " + message;
    }
    return std::string("accepted");
  };
  const std::string outside = refusal((root / "secret" / "exists.txt").string());
  EXPECT_EQ(outside.rfind("400 ", 0), 0u) << outside;
  EXPECT_EQ(refusal((root / "secret" / "missing.txt").string()), outside);
  EXPECT_EQ(refusal((root / "allowed" / "escape" / "exists.txt").string()), outside);
  EXPECT_EQ(refusal((root / "allowed" / "escape" / "missing.txt").string()), outside);
  EXPECT_EQ(refusal((root / "allowed" / ".." / "secret" / "missing.txt").string()), outside);
  EXPECT_EQ(refusal("/no-such-directory/missing.txt"), outside);
  // Inside the allowed directory the client may learn that a file is missing.
  EXPECT_NE(refusal((root / "allowed" / "missing.png").string()), outside);

  // The operator named the directory through a symlink: the client may use that spelling too, and still
  // cannot walk out through it.
  fs::create_directory_symlink(root / "allowed", root / "link");
  policy.allowed_image_dir = ImageDirectory::of(root / "link");
  EXPECT_EQ(policy.allowed_image_dir->canonical, fs::canonical(root / "allowed"));
  EXPECT_NE(refusal((root / "link" / "missing.png").string()), outside);
  EXPECT_NE(refusal((root / "allowed" / "missing.png").string()), outside);
  EXPECT_EQ(refusal((root / "link" / "escape" / "exists.txt").string()), outside);
  EXPECT_EQ(refusal((root / "link" / ".." / "secret" / "exists.txt").string()), outside);
  EXPECT_EQ(refusal((root / "linkx" / "missing.png").string()), outside);
  fs::remove_all(root);
}

}  // namespace
}  // namespace fastvlm::server
