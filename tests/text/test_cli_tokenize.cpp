// `fastvlm tokenize` / `fastvlm detokenize` end to end on the fixture cases. Skipped when the fastvlm
// binary has not been built (the text library's tests can be built on their own).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kFixtures = std::string(FASTVLM_SHARED_DIR) + "/fixtures";
const fs::path kBinary = fs::path(FASTVLM_BIN_DIR) / "fastvlm";

struct CliRun {
  int exit_code;
  std::vector<json> stdout_lines;
  std::string stderr_text;
};

std::string read_file(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// Runs `fastvlm <command> -m <model> --jsonl <input written to a file>`.
CliRun run_cli(const std::string& command, const std::string& model, const std::string& input) {
  const fs::path dir = fs::temp_directory_path() / ("fastvlm_cli_" + command + "_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "in.jsonl", std::ios::binary) << input;
  const std::string shell = kBinary.string() + " " + command + " -m " + kFixtures + "/" + model + " --jsonl " +
                            (dir / "in.jsonl").string() + " > " + (dir / "out.jsonl").string() + " 2> " +
                            (dir / "err.txt").string();
  const int status = std::system(shell.c_str());
  CliRun run{WIFEXITED(status) ? WEXITSTATUS(status) : -1, {}, read_file(dir / "err.txt")};
  std::istringstream out(read_file(dir / "out.jsonl"));
  for (std::string line; std::getline(out, line);) run.stdout_lines.push_back(json::parse(line));
  fs::remove_all(dir);
  return run;
}

class CliTokenize : public testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kBinary)) GTEST_SKIP() << kBinary << " is not built";
  }
};

TEST_F(CliTokenize, EncodesAndDecodesTheFixtureCases) {
  std::ifstream cases(kFixtures + "/qwen2-tokenizer/cases.jsonl");
  std::string tokenize_input, detokenize_input;
  std::vector<std::vector<int32_t>> expected_ids;
  std::vector<std::string> expected_texts;
  for (std::string line; std::getline(cases, line);) {
    const json c = json::parse(line);
    if (c["kind"] != "encode") continue;
    tokenize_input += json{{"text", c["text"]}}.dump() + "\n";
    detokenize_input += json{{"ids", c["ids"]}}.dump() + "\n";
    expected_ids.push_back(c["ids"]);
    expected_texts.push_back(c.value("decoded", c["text"].get<std::string>()));
  }

  const CliRun tokenized = run_cli("tokenize", "tiny-fastvlm", tokenize_input);
  EXPECT_EQ(tokenized.exit_code, 0) << tokenized.stderr_text;
  ASSERT_EQ(tokenized.stdout_lines.size(), expected_ids.size());
  for (size_t i = 0; i < expected_ids.size(); ++i) {
    EXPECT_EQ(tokenized.stdout_lines[i]["ids"].get<std::vector<int32_t>>(), expected_ids[i]) << "line " << i + 1;
  }

  const CliRun detokenized = run_cli("detokenize", "qwen2-tokenizer", detokenize_input);
  EXPECT_EQ(detokenized.exit_code, 0) << detokenized.stderr_text;
  ASSERT_EQ(detokenized.stdout_lines.size(), expected_texts.size());
  for (size_t i = 0; i < expected_texts.size(); ++i) {
    EXPECT_EQ(detokenized.stdout_lines[i]["text"].get<std::string>(), expected_texts[i]) << "line " << i + 1;
  }
}

TEST_F(CliTokenize, BadLinesAreReportedByLineNumberAndFailTheRun) {
  const CliRun run = run_cli("tokenize", "qwen2-tokenizer",
                          "{\"text\":\"Hello world\"}\n"
                          "{\"text\":\"ab\xC3(\"}\n"
                          "not json\n"
                          "{\"ids\":[1]}\n"
                          "{\"text\":\"hello\"}\n");
  EXPECT_NE(run.exit_code, 0);
  ASSERT_EQ(run.stdout_lines.size(), 5u);  // one output line per input line, errors included
  EXPECT_EQ(run.stdout_lines[0]["ids"], json::array({9707, 1879}));
  EXPECT_EQ(run.stdout_lines[4]["ids"], json::array({14990}));
  for (int line : {2, 3, 4}) {
    EXPECT_TRUE(run.stdout_lines[size_t(line - 1)].contains("error")) << "line " << line;
    EXPECT_NE(run.stderr_text.find("in.jsonl:" + std::to_string(line) + ": "), std::string::npos) << run.stderr_text;
  }
  EXPECT_NE(run.stderr_text.find("invalid UTF-8 at byte offset 11"), std::string::npos) << run.stderr_text;
}

TEST_F(CliTokenize, DetokenizeIgnoresIdsOutsideTheVocabulary) {
  const CliRun run = run_cli("detokenize", "tiny-fastvlm", "{\"ids\":[9707,151900,-200,99999999999,1879]}\n");
  EXPECT_EQ(run.exit_code, 0) << run.stderr_text;
  ASSERT_EQ(run.stdout_lines.size(), 1u);
  EXPECT_EQ(run.stdout_lines[0]["text"], "Hello world");
}

}  // namespace
