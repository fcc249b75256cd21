// The Qwen2 tokenizer against the expected encodings in fixtures/qwen2-tokenizer/cases.jsonl, loaded
// both from tokenizer.json and from the slow file set (vocab.json + merges.txt) of tiny-fastvlm.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace fastvlm::text {
namespace {

const std::string kFixtures = std::string(FASTVLM_SHARED_DIR) + "/fixtures";

// Loading parses ~10 MB of JSON/text, so each directory is loaded once for the whole test program.
const Tokenizer& tokenizer_from(const std::string& dir) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
  auto& tokenizer = loaded[dir];
  if (!tokenizer) tokenizer = Tokenizer::load(kFixtures + "/" + dir);
  return *tokenizer;
}

std::vector<nlohmann::json> read_cases() {
  std::ifstream file(kFixtures + "/qwen2-tokenizer/cases.jsonl");
  EXPECT_TRUE(file) << "cannot open cases.jsonl";
  std::vector<nlohmann::json> cases;
  for (std::string line; std::getline(file, line);) {
    if (!line.empty()) cases.push_back(nlohmann::json::parse(line));
  }
  return cases;
}

class TokenizerFiles : public testing::TestWithParam<std::string> {
 protected:
  const Tokenizer& tokenizer() const { return tokenizer_from(GetParam()); }
};

INSTANTIATE_TEST_SUITE_P(Qwen2, TokenizerFiles, testing::Values("qwen2-tokenizer", "tiny-fastvlm"),
                         [](const testing::TestParamInfo<std::string>& info) {
                           return info.param == "qwen2-tokenizer" ? std::string("TokenizerJson")
                                                                  : std::string("VocabAndMerges");
                         });

TEST_P(TokenizerFiles, EveryFixtureCase) {
  const std::vector<nlohmann::json> cases = read_cases();
  ASSERT_EQ(cases.size(), 198u);
  for (size_t line = 0; line < cases.size(); ++line) {
    const nlohmann::json& c = cases[line];
    SCOPED_TRACE("cases.jsonl line " + std::to_string(line + 1) + " [" + c["tag"].get<std::string>() + "] " +
                 c["text"].dump());
    const std::string text = c["text"];
    const std::vector<int32_t> ids = c["ids"];
    if (c["kind"] == "encode") {
      EXPECT_EQ(tokenizer().encode(text), ids);
      EXPECT_EQ(tokenizer().decode(ids), c.value("decoded", text));
    } else {
      ASSERT_EQ(c["kind"], "decode");
      EXPECT_EQ(tokenizer().decode(ids), text);
    }
  }
}

TEST_P(TokenizerFiles, VocabularyAndAddedTokens) {
  EXPECT_EQ(tokenizer().vocab_size(), 151646u);
  EXPECT_EQ(tokenizer().token_to_id("<|endoftext|>"), 151643);
  EXPECT_EQ(tokenizer().token_to_id("<|im_start|>"), 151644);
  EXPECT_EQ(tokenizer().token_to_id("<|im_end|>"), 151645);
  EXPECT_EQ(tokenizer().token_to_id("Hello"), 9707);
  EXPECT_EQ(tokenizer().token_to_id("\xC4\xA0world"), 1879);  // "Ġworld": the byte alphabet's spelling
  EXPECT_EQ(tokenizer().token_to_id("\xC4\x8A"), 198);        // "Ċ" is "\n"
  EXPECT_EQ(tokenizer().token_to_id("<image>"), -1);
  EXPECT_EQ(tokenizer().token_to_id(" world"), -1);  // a raw space is not in the byte alphabet
  EXPECT_EQ(tokenizer().token_bytes(1879), " world");
}

TEST_P(TokenizerFiles, InvalidUtf8NamesTheByteOffset) {
  const std::vector<std::pair<std::string, size_t>> invalid = {
      {"ab\xC3(", 2},               // a lead byte without its continuation
      {"abc\xC0\x80", 3},           // overlong NUL
      {"x\xED\xA0\x80", 1},         // a UTF-16 surrogate
      {"\xF4\x90\x80\x80", 0},      // past U+10FFFF
      {"caf\xC3\xA9 \xE4\xB8", 6},  // truncated at the end, after a valid é
      {"12345678\x80", 8},          // a stray continuation byte after the ASCII fast path
  };
  for (const auto& [text, offset] : invalid) {
    try {
      tokenizer().encode(text);
      ADD_FAILURE() << "no error for invalid UTF-8 at offset " << offset;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("byte offset " + std::to_string(offset)), std::string::npos) << e.what();
    }
  }
}

TEST_P(TokenizerFiles, IdsOutsideTheVocabularyDecodeToNothing) {
  // The embedding table has 151936 rows: ids past the tokenizer's 151646 can be sampled.
  const std::vector<int32_t> ids = {9707, 151646, 151935, 1 << 30, -1, -200, 1879};
  EXPECT_EQ(tokenizer().decode(ids), "Hello world");
  EXPECT_EQ(tokenizer().token_bytes(151700), "");
}

TEST_P(TokenizerFiles, LongCjkRunIsOnePieceAndNotQuadratic) {
  // 10,000 ideographs with no space or punctuation are a single pre-tokenizer piece of 30,000 bytes.
  std::string text;
  for (int i = 0; i < 10000; ++i) append_utf8(text, char32_t(0x4E00 + (i * 7919) % 0x5000));
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tokenizer().encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(tokenizer().decode(ids), text);
  // Linked-list-and-heap BPE takes milliseconds here; a quadratic one takes many seconds.
  EXPECT_LT(seconds, 2.0);

  const std::string same_letter(20000, 'a');
  EXPECT_EQ(tokenizer().decode(tokenizer().encode(same_letter)), same_letter);
}

TEST_P(TokenizerFiles, RandomTextRoundTripsToItsNfcForm) {
  // Code points drawn from ranges that exercise every pre-tokenizer class and NFC composition.
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E}, {0x09, 0x0D}, {0x80, 0x2FF}, {0x300, 0x36F}, {0x1100, 0x11FF}, {0xAC00, 0xAC40},
      {0x2000, 0x206F}, {0x3000, 0x303F}, {0x4E00, 0x4E80}, {0x1F600, 0x1F64F}, {0xFEFF, 0xFEFF}};
  std::mt19937 random(1234);
  for (int round = 0; round < 300; ++round) {
    std::string text;
    const int length = int(random() % 40);
    for (int i = 0; i < length; ++i) {
      if (random() % 50 == 0) text += "<|im_end|>";
      const auto& [low, high] = ranges[random() % ranges.size()];
      append_utf8(text, low + char32_t(random() % (high - low + 1)));
    }
    EXPECT_EQ(tokenizer().decode(tokenizer().encode(text)), nfc(text)) << nlohmann::json(text).dump();
  }
}

TEST(StreamDecoder, HoldsBackIncompleteCharacters) {
  const Tokenizer& tokenizer = tokenizer_from("qwen2-tokenizer");
  // 视 (E8 A7 86) and 觉 (E8 A7 89) one byte-token at a time, from the fixture's decode-bytes case.
  const std::vector<int32_t> byte_ids = {164, 100, 228, 164, 100, 231};
  StreamDecoder decoder(tokenizer);
  const std::vector<std::string> expected = {"", "", "视", "", "", "觉"};
  for (size_t i = 0; i < byte_ids.size(); ++i) EXPECT_EQ(decoder.push(byte_ids[i]), expected[i]) << "push " << i;
  EXPECT_EQ(decoder.flush(), "");

  // 汉 as a whole token, then 语 split over three byte tokens, then "!" (decode-partial-char case).
  StreamDecoder split(tokenizer);
  std::string printed;
  for (int32_t id : {99897, 164, 107}) printed += split.push(id);
  EXPECT_EQ(printed, "汉");
  printed += split.push(255);
  printed += split.push(0);
  EXPECT_EQ(printed + split.flush(), "汉语!");
}

TEST(StreamDecoder, ReplacesBytesThatCanNeverFormACharacter) {
  const Tokenizer& tokenizer = tokenizer_from("qwen2-tokenizer");
  StreamDecoder decoder(tokenizer);
  // A lone continuation byte: the byte alphabet spells 0x80 as U+0122 "Ģ".
  const int32_t continuation_byte = tokenizer.token_to_id("\xC4\xA2");
  ASSERT_EQ(tokenizer.token_bytes(continuation_byte), "\x80");
  EXPECT_EQ(decoder.push(continuation_byte), "\xEF\xBF\xBD");
  EXPECT_EQ(decoder.push(9707), "Hello");
  EXPECT_EQ(decoder.push(164), "");  // E8: start of a 3-byte character
  EXPECT_EQ(decoder.push(151700), "");  // not a token: nothing, and the held byte stays held
  EXPECT_EQ(decoder.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(decoder.flush(), "");
}

TEST(TokenizerLoad, MissingDirectoryIsAClearError) {
  try {
    Tokenizer::load(kFixtures + "/no-such-model");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-model"), std::string::npos) << e.what();
  }
}

// A scratch model directory holding edited copies of tokenizer files.
class TokenizerDir {
 public:
  TokenizerDir() : dir_(std::filesystem::temp_directory_path() / ("fastvlm-tok-" + std::to_string(::getpid()) + "-" +
                                                                  std::to_string(counter_++))) {
    std::filesystem::create_directories(dir_);
  }
  ~TokenizerDir() { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(dir_ / name) << text; }
  void copy(const std::string& from_dir, const std::string& name) const {
    std::filesystem::copy_file(kFixtures + "/" + from_dir + "/" + name, dir_ / name);
  }
  // The message of the fastvlm::Error that loading throws ("" when it loads).
  std::string load_error() const {
    try {
      Tokenizer::load(dir_);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
};

std::string read_text(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

// The nested value is written as text: building it as a json would recurse in the test itself.
TEST(TokenizerLoad, DeeplyNestedNormalizerIsRefusedWhileParsing) {
  TokenizerDir dir;
  dir.write("tokenizer.json", R"({"normalizer":{"type":"Sequence","normalizers":)" + std::string(400000, '[') +
                                  std::string(400000, ']') + R"(},"model":{"type":"BPE","vocab":{},"merges":[]}})");
  const std::string message = dir.load_error();
  EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
  EXPECT_NE(message.find("nests deeper"), std::string::npos) << message;
}

// Ids index a table: 2e9 once allocated 2e9 strings (std::bad_alloc), 4294967297 was narrowed to 1.
TEST(TokenizerLoad, TokenIdsOutsideTheVocabularyAreRefused) {
  nlohmann::json config = nlohmann::json::parse(read_text(kFixtures + "/qwen2-tokenizer/tokenizer.json"));
  const std::string original = config.dump();
  for (const nlohmann::json& id : {nlohmann::json(2000000000), nlohmann::json(4294967297ull), nlohmann::json(-3),
                                   nlohmann::json(1.5)}) {
    SCOPED_TRACE(id.dump());
    TokenizerDir dir;
    config = nlohmann::json::parse(original);
    config["added_tokens"][0]["id"] = id;
    dir.write("tokenizer.json", config.dump());
    const std::string message = dir.load_error();
    EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
    EXPECT_NE(message.find("token id"), std::string::npos) << message;
  }
  TokenizerDir slow;
  for (const char* name : {"merges.txt", "tokenizer_config.json", "added_tokens.json"}) slow.copy("tiny-fastvlm", name);
  nlohmann::json vocab = nlohmann::json::parse(read_text(kFixtures + "/tiny-fastvlm/vocab.json"));
  vocab["!"] = 4294967297ull;
  slow.write("vocab.json", vocab.dump());
  EXPECT_NE(slow.load_error().find("vocab.json: token id 4294967297"), std::string::npos) << slow.load_error();
}

// vocab.json is read member by member, so a token listed twice reaches the loader (a parsed tree kept
// only the last): refused, naming the file and the token.
TEST(TokenizerLoad, ATokenListedTwiceIsRefused) {
  TokenizerDir dir;
  for (const char* name : {"merges.txt", "tokenizer_config.json", "added_tokens.json"}) dir.copy("tiny-fastvlm", name);
  std::string vocab = read_text(kFixtures + "/tiny-fastvlm/vocab.json");
  ASSERT_EQ(vocab.front(), '{');
  dir.write("vocab.json", "{\"!\": 0, " + vocab.substr(1));
  EXPECT_NE(dir.load_error().find("vocab.json: token \"!\" is listed twice"), std::string::npos) << dir.load_error();
}

TEST(TokenizerLoad, EmptyMergesAreRefused) {
  TokenizerDir dir;
  for (const char* name : {"vocab.json", "tokenizer_config.json", "added_tokens.json"}) dir.copy("tiny-fastvlm", name);
  dir.write("merges.txt", "");
  EXPECT_NE(dir.load_error().find("no merges"), std::string::npos) << dir.load_error();
  dir.write("merges.txt", "#version: 0.2\n");
  EXPECT_NE(dir.load_error().find("no merges"), std::string::npos) << dir.load_error();
}

}  // namespace
}  // namespace fastvlm::text
