// The structured-output constraint: schemas compile or are refused naming the keyword, the matcher accepts
// exactly the documents it should byte by byte, and every token mask equals brute force over an
// adversarial vocabulary (tokens spanning quotes and braces, escapes, split UTF-8), along random walks.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "text/json_schema.h"

namespace fastvlm::text {
namespace {

std::shared_ptr<const JsonSchema> schema(const std::string& text) { return JsonSchema::parse(text); }

bool accepts(const std::string& schema_text, const std::string& document) {
  auto s = schema(schema_text);
  JsonMatcher m(*s);
  return m.feed(document) && m.complete();
}

bool accepts_prefix(const std::string& schema_text, const std::string& prefix) {
  auto s = schema(schema_text);
  JsonMatcher m(*s);
  return m.feed(prefix);
}

TEST(JsonSchema, AcceptsAndRefusesDocuments) {
  const std::string person = R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer",
      "minimum":0,"maximum":150},"tags":{"type":"array","items":{"enum":["a","b"]},"maxItems":2}},
      "required":["name","age"],"additionalProperties":false})";
  EXPECT_TRUE(accepts(person, R"({"name":"Ann","age":31})"));
  EXPECT_TRUE(accepts(person, R"({"name":"Ann","age":31,"tags":["a","b"]})"));
  EXPECT_FALSE(accepts(person, R"({"name":"Ann"})"));                         // age required
  EXPECT_FALSE(accepts(person, R"({"age":31,"name":"Ann"})"));                // schema order
  EXPECT_FALSE(accepts(person, R"({"name":"Ann","age":151})"));               // maximum
  EXPECT_FALSE(accepts_prefix(person, R"({"name":"Ann","age":2000)"));       // masked as it cannot fit
  EXPECT_FALSE(accepts(person, R"({"name":"Ann","age":3,"tags":["a","b","a"]})"));  // maxItems
  EXPECT_FALSE(accepts(person, R"({"name": "Ann","age":3})"));                // no whitespace
  EXPECT_FALSE(accepts(person, R"({"name":"Ann","age":3} )"));
  EXPECT_FALSE(accepts(person, R"({"name":"Ann","age":3}{)"));

  EXPECT_TRUE(accepts(R"({"type":"string"})", R"("a\"\\\/\b\f\n\r\t\u00e9é😀")"));
  EXPECT_FALSE(accepts_prefix(R"({"type":"string"})", "\"\x01"));       // raw control character
  EXPECT_FALSE(accepts_prefix(R"({"type":"string"})", "\"\xc3\x28"));   // broken UTF-8
  EXPECT_FALSE(accepts_prefix(R"({"type":"string"})", "\"\xed\xa0"));   // a UTF-8 surrogate
  EXPECT_FALSE(accepts_prefix(R"({"type":"string"})", R"("\ud8)"));     // a \u surrogate
  EXPECT_TRUE(accepts(R"({"type":"string","minLength":2,"maxLength":3})", R"("éé")"));
  EXPECT_FALSE(accepts(R"({"type":"string","minLength":2,"maxLength":3})", R"("é")"));
  EXPECT_FALSE(accepts_prefix(R"({"type":"string","maxLength":3})", R"("abcd)"));

  EXPECT_TRUE(accepts(R"({"type":"string","pattern":"^[A-Z][a-z]+-\\d{2,3}$"})", R"("Abc-123")"));
  EXPECT_FALSE(accepts_prefix(R"({"type":"string","pattern":"^[A-Z][a-z]+-\\d{2,3}$"})", R"("a)"));
  EXPECT_FALSE(accepts(R"({"type":"string","pattern":"^[A-Z][a-z]+-\\d{2,3}$"})", R"("Abc-1")"));
  EXPECT_TRUE(accepts(R"({"type":"string","format":"date-time"})", R"("2024-05-01T13:45:00Z")"));
  EXPECT_TRUE(accepts(R"({"type":"string","format":"uuid"})", R"("123e4567-e89b-12d3-a456-426614174000")"));
  EXPECT_FALSE(accepts(R"({"type":"string","format":"date"})", R"("2024-5-1")"));

  EXPECT_TRUE(accepts(R"({"type":"number","minimum":-1.5,"maximum":2})", "-1.25"));
  EXPECT_FALSE(accepts(R"({"type":"number","minimum":-1.5,"maximum":2})", "-1.75"));
  EXPECT_FALSE(accepts_prefix(R"({"type":"number","minimum":-1.5,"maximum":2})", "3"));
  EXPECT_FALSE(accepts(R"({"type":"number","exclusiveMaximum":5})", "5"));
  EXPECT_FALSE(accepts_prefix(R"({"type":"number","exclusiveMaximum":5})", "5."));  // 5.x >= 5
  EXPECT_FALSE(accepts_prefix(R"({"type":"integer"})", "1."));
  EXPECT_FALSE(accepts_prefix(R"({"type":"integer"})", "01"));
  EXPECT_TRUE(accepts(R"({"type":"integer","exclusiveMinimum":0})", "7"));
  EXPECT_FALSE(accepts(R"({"type":"integer","exclusiveMinimum":0})", "0"));

  const std::string tree = R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"boolean"},
      "kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["v"]}},"$ref":"#/$defs/node"})";
  EXPECT_TRUE(accepts(tree, R"({"v":true,"kids":[{"v":false},{"v":true,"kids":[]}]})"));
  EXPECT_FALSE(accepts(tree, R"({"v":true,"kids":[{}]})"));

  const std::string either = R"({"anyOf":[{"type":"integer"},{"type":"string","maxLength":1},{"type":"null"}]})";
  EXPECT_TRUE(accepts(either, "12"));
  EXPECT_TRUE(accepts(either, R"("x")"));
  EXPECT_TRUE(accepts(either, "null"));
  EXPECT_FALSE(accepts(either, "true"));

  EXPECT_TRUE(accepts(R"({"type":"object"})", R"({"a":[1,{"b":null}],"c":"d","e":-0.5})"));
  EXPECT_FALSE(accepts(R"({"type":"object"})", "[1]"));
  EXPECT_TRUE(accepts(R"({"type":"object","additionalProperties":{"type":"integer"}})", R"({"x":1,"y":2})"));
  EXPECT_FALSE(accepts(R"({"type":"object","additionalProperties":{"type":"integer"}})", R"({"x":"1"})"));
  EXPECT_TRUE(accepts(R"({"type":"array","minItems":1,"items":{"const":{"k":[1]}}})", R"([{"k":[1]}])"));
  EXPECT_FALSE(accepts(R"({"type":"array","minItems":1})", "[]"));
}

TEST(JsonSchema, RefusesNamingTheKeyword) {
  auto refused = [](const std::string& text, const std::string& keyword) {
    try {
      schema(text);
      ADD_FAILURE() << text << " compiled";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(keyword), std::string::npos) << e.what();
    }
  };
  refused(R"({"type":"string","oneOf":[]})", "'oneOf'");
  refused(R"({"type":"strng"})", "'strng'");
  refused(R"({"type":"string","format":"email"})", "'format'");
  refused(R"j({"type":"string","pattern":"(a|b)"})j", "'pattern'");
  refused(R"({"type":"array","minItems":3,"maxItems":2})", "'minItems'");
  refused(R"({"type":"integer","minimum":5,"maximum":1})", "'minimum'");
  refused(R"({"$ref":"#/$defs/missing"})", "'$ref'");
  refused(R"({"type":"object","properties":{},"required":["x"]})", "'x'");
  refused(R"({"type":"string","minimum":1})", "'minimum'");
  refused(R"({"enum":[]})", "'enum'");
  refused("{not json", "not valid JSON");
}

// Tokens that cross every boundary the matcher has: quotes, braces, colons and commas together, escapes
// cut in the middle, UTF-8 characters split across tokens, numbers running into structure.
std::vector<std::string> adversarial_vocabulary() {
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.push_back(std::string(1, char(b)));
  for (const char* token :
       {"\"}", "\"},{\"", "\":\"", "\":", "\",\"", "{\"", "\"}]", "}]}", "]}", "\\\"", "\\\\", "\\u00", "\\u00e9",
        "\\ud83d", "\\n\"", "é", "\xc3", "\xa9\"", "\xf0\x9f", "\x98\x80", "😀\"}", "1.5", "-0", "-0.", "12",
        "007", "1e5", "true}", "null]", "false,", "{\"name\":\"", "name", "\"name\":", "\"age\":1", "\":1,\"",
        "[]", "[{", "},", "\"a\"", "\"b\"]", "2024-", "-01T", ":00Z\"", "abc", " ", "\": ", "\"\"", "\"x\"}",
        // Plain text of several characters (inside a string masked by their count alone), cut UTF-8 and
        // escapes at the end included.
        "abcdefgh", "ééé", "a\\nb", "\\u00e9x", "xy\xc3", "z\\u00"})
    vocab.push_back(token);
  vocab.push_back("");  // an id that is not a token: never allowed
  return vocab;
}

void check_masks_by_brute_force(const std::string& schema_text, int walks, uint64_t seed) {
  auto s = schema(schema_text);
  const std::vector<std::string> vocab = adversarial_vocabulary();
  std::vector<std::string_view> views(vocab.begin(), vocab.end());
  JsonConstraint constraint(s, std::make_shared<TokenTrie>(views, std::span<const int32_t>{}));
  std::mt19937_64 random(seed);
  int completed = 0;
  for (int walk = 0; walk < walks; ++walk) {
    JsonMatcher state = constraint.start();
    std::string document;
    for (int step = 0; step < 200; ++step) {
      auto mask = constraint.allowed(state);
      std::vector<int32_t> allowed;
      for (size_t id = 0; id < vocab.size(); ++id) {
        JsonMatcher copy = state;
        const bool brute = !vocab[id].empty() && copy.feed(vocab[id]);
        ASSERT_EQ(mask->test(int32_t(id)), brute) << schema_text << " after " << document << " token " << id;
        if (brute) allowed.push_back(int32_t(id));
      }
      ASSERT_EQ(mask->allowed, allowed.size());
      // No dead ends: a state either completes the document or can go on.
      ASSERT_TRUE(state.complete() || !allowed.empty()) << document;
      if (allowed.empty() || (state.complete() && random() % 4 == 0)) break;
      // Prefer closing tokens half the time, so that walks finish.
      int32_t id = allowed[random() % allowed.size()];
      if (random() % 2)
        for (int32_t candidate : allowed)
          if (vocab[candidate].find_first_of("\"}]") != std::string::npos) id = candidate;
      ASSERT_TRUE(state.feed(vocab[id]));
      document += vocab[id];
    }
    if (state.complete()) {
      ++completed;
      EXPECT_NO_THROW((void)nlohmann::json::parse(document)) << document;
    }
  }
  EXPECT_GT(completed, 0) << schema_text;
}

TEST(JsonSchema, MasksEqualBruteForce) {
  check_masks_by_brute_force(R"({"type":"object","properties":{"name":{"type":"string","maxLength":6},
      "age":{"type":"integer","minimum":0,"maximum":120},"ok":{"type":"boolean"}},"required":["name"],
      "additionalProperties":false})", 20, 1);
  check_masks_by_brute_force(R"({"type":"array","items":{"anyOf":[{"type":"number","minimum":-1,"maximum":1.5},
      {"enum":["a","é",null]}]},"minItems":1,"maxItems":4})", 20, 2);
  check_masks_by_brute_force(R"({"type":"string","format":"date-time"})", 5, 3);
  check_masks_by_brute_force(R"({"type":"object"})", 20, 4);
  check_masks_by_brute_force(R"({"type":"string","maxLength":5})", 20, 5);
  check_masks_by_brute_force(R"({"type":"string","minLength":3,"maxLength":9})", 20, 6);
  check_masks_by_brute_force(R"({"type":"array","items":{"type":"string","maxLength":2},"maxItems":3})", 20, 7);
}

}  // namespace
}  // namespace fastvlm::text
