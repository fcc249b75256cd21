// Every JSON file the engine reads goes through read_json_file / parse_json (or read_flat_json_object), which bound nesting depth
// and size before a tree is built: code that walks or prints a value recurses once per level, and a
// tree costs about ten times its text.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json_file.h"
#include "io/config_keys.h"

namespace fs = std::filesystem;
using namespace fastvlm;

namespace {

std::string nested(int depth) { return std::string(size_t(depth), '[') + std::string(size_t(depth), ']'); }

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(JsonFile, DepthIsBoundedWhileParsing) {
  const JsonLimits limits;
  EXPECT_NO_THROW(parse_json(nested(limits.max_depth), "ok.json"));
  EXPECT_NO_THROW(parse_json("{\"a\":" + nested(limits.max_depth - 1) + "}", "ok.json"));
  const std::string message = error_of([&] { parse_json(nested(limits.max_depth + 1), "deep.json"); });
  EXPECT_EQ(message, "deep.json: JSON nests deeper than 64 levels");
}

// A config.json nested 100,000 deep once overflowed the stack when the error message printed the value.
TEST(JsonFile, DeepConfigFailsWithAnErrorNamingTheFile) {
  const fs::path file = fs::temp_directory_path() / ("fastvlm-deep-" + std::to_string(::getpid()) + ".json");
  std::ofstream(file) << R"({"hidden_size":)" << nested(100000) << "}";
  const std::string message = error_of([&] {
    const nlohmann::json root = read_json_file(file);
    ConfigKeys(root, file).required_integer("hidden_size");
  });
  fs::remove(file);
  EXPECT_EQ(message, file.string() + ": JSON nests deeper than 64 levels");
}

TEST(JsonFile, SizeIsBoundedBeforeReading) {
  const fs::path file = fs::temp_directory_path() / ("fastvlm-big-" + std::to_string(::getpid()) + ".json");
  std::ofstream(file) << "[" << std::string(100, ' ') << "]";
  const std::string message = error_of([&] { read_json_file(file, JsonLimits{64, 64}); });
  EXPECT_NO_THROW(read_json_file(file, JsonLimits{102, 64}));
  fs::remove(file);
  EXPECT_EQ(message, file.string() + ": 102 bytes of JSON, more than the limit of 64");
  EXPECT_NE(error_of([] { parse_json("{", "broken.json"); }).find("broken.json: invalid JSON"), std::string::npos);
}

// A flat object read member by member (a tokenizer's vocab.json): every member in file order, duplicates
// included; any other shape, broken JSON or an oversized file is an error naming the file.
TEST(JsonFile, FlatObjectMembersArriveInFileOrder) {
  const fs::path file = fs::temp_directory_path() / ("fastvlm-flat-" + std::to_string(::getpid()) + ".json");
  const auto members_of = [&](const std::string& text, const JsonLimits& limits = {}) {
    std::ofstream(file) << text;
    std::vector<std::string> members;
    read_flat_json_object(
        file, [&](std::string&& name, nlohmann::json&& value) { members.push_back(name + "=" + value.dump()); },
        limits);
    return members;
  };
  EXPECT_EQ(members_of(R"({"z": 2, "a": -1, "\u00e9t\u00e9": "x", "n": null, "z": 3.5, "b": true})"),
            (std::vector<std::string>{"z=2", "a=-1", "été=\"x\"", "n=null", "z=3.5", "b=true"}));
  EXPECT_TRUE(members_of("{}").empty());
  for (const char* shape : {R"({"a": {"b": 1}})", R"({"a": [1]})", "[1, 2]", "7", R"("text")"})
    EXPECT_EQ(error_of([&] { members_of(shape); }), file.string() + ": expected one JSON object of names to scalar values")
        << shape;
  EXPECT_NE(error_of([&] { members_of(R"({"a": 1,)"); }).find(file.string() + ": invalid JSON"), std::string::npos);
  EXPECT_EQ(error_of([&] { members_of(R"({"a": 1})", JsonLimits{4, 64}); }),
            file.string() + ": 8 bytes of JSON, more than the limit of 4");
  // What the callback throws reaches the caller.
  EXPECT_EQ(error_of([&] {
              std::ofstream(file) << R"({"a": 1})";
              read_flat_json_object(file, [](std::string&&, nlohmann::json&&) { throw Error("refused"); });
            }),
            "refused");
  fs::remove(file);
}

// Per-key ceilings, and values past 2^32 are refused rather than narrowed.
TEST(ConfigKeys, IntegersAreRangeCheckedBeforeNarrowing) {
  const nlohmann::json object = {{"layers", 4294967297ull}, {"big", 2000}, {"ratio", 1e300}, {"huge", 18446744073709551615ull}};
  const ConfigKeys keys(object, "config.json");
  EXPECT_EQ(error_of([&] { keys.integer("layers", 0); }),
            "config.json: key 'layers': expected an integer in [0, 1073741824], got 4294967297");
  EXPECT_NE(error_of([&] { keys.integer("huge", 0); }).find("key 'huge'"), std::string::npos);
  EXPECT_EQ(keys.integer("big", 0, 1, 2000), 2000);
  EXPECT_NE(error_of([&] { keys.integer("big", 0, 1, 1999); }).find("[1, 1999]"), std::string::npos);
  EXPECT_NE(error_of([&] { keys.number("ratio", 1, 64); }).find("up to 64"), std::string::npos);
}

}  // namespace
