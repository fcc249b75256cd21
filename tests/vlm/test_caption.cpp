// `fastvlm caption` as a user runs it: folders with a corrupt file and a non-image, globs, list files and
// stdin, the JSONL records against `fastvlm run`'s answers, --resume after a crash that left half a line,
// and the exit status counting failures.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "run_command.h"

namespace fs = std::filesystem;
using fastvlm::test_support::shell_quote;

namespace {

const fs::path kTiny = fs::path(FASTVLM_SHARED_DIR) / "fixtures" / "tiny-fastvlm";
const fs::path kImageA = kTiny / "golden" / "image_a_320x200.png";
const fs::path kImageB = kTiny / "golden" / "image_b_97x131.jpg";
const std::string kBinary = std::string(FASTVLM_BIN_DIR) + "/fastvlm";
const std::string kModelFlags = " -m " + shell_quote(kTiny.string()) + " -n 8 --temp 0 --threads 2 --dtype f32 ";

fastvlm::test_support::CommandResult run(const std::string& args, const std::string& stdin_text = "") {
  const fs::path input = fs::temp_directory_path() / ("fastvlm-caption-in-" + std::to_string(::getpid()));
  std::ofstream(input) << stdin_text;
  auto result = fastvlm::test_support::run_command(kBinary + " " + args + " < " + shell_quote(input.string()));
  fs::remove(input);
  return result;
}

std::vector<nlohmann::json> parse_jsonl(const std::string& text) {
  std::vector<nlohmann::json> records;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
  return records;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// What `fastvlm run` answers about `image` with the same model flags: the text every caption must match.
std::string run_answer(const fs::path& image) {
  auto r = run("run" + kModelFlags + "--json -p 'Describe the image.' --image " + shell_quote(image.string()));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return nlohmann::json::parse(r.out)["text"].get<std::string>();
}

class Caption : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fastvlm-caption-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "images" / "sub");
    fs::copy_file(kImageA, dir_ / "images" / "a.png");
    fs::copy_file(kImageB, dir_ / "images" / "sub" / "b.JPG");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string q(const fs::path& p) const { return shell_quote(p.string()); }
  fs::path dir_;
};

TEST_F(Caption, FolderRecordsEveryImageAndTheCorruptOneAsAnError) {
  std::ofstream(dir_ / "images" / "broken.png") << "\x89PNG\r\n\x1a\n not really a png";
  std::ofstream(dir_ / "images" / "notes.txt") << "not an image, skipped by extension";
  const fs::path out = dir_ / "out.jsonl";
  auto r = run("caption" + kModelFlags + "-q " + q(dir_ / "images") + " -o " + q(out) + " 2>&1");
  EXPECT_EQ(r.exit_code, 1) << r.out;  // one image failed
  auto records = parse_jsonl(read_file(out));
  ASSERT_EQ(records.size(), 3u) << read_file(out);
  // Sorted by path, whatever order the directory lists them in.
  EXPECT_EQ(records[0]["path"], (dir_ / "images" / "a.png").string());
  EXPECT_EQ(records[1]["path"], (dir_ / "images" / "broken.png").string());
  EXPECT_EQ(records[2]["path"], (dir_ / "images" / "sub" / "b.JPG").string());

  EXPECT_EQ(records[0]["text"], run_answer(kImageA));
  EXPECT_EQ(records[0]["prompt_tokens"], 40);  // the goldens' prompt length for image A
  EXPECT_GT(records[0]["tokens"].get<int>(), 0);
  EXPECT_LE(records[0]["tokens"].get<int>(), 8);
  for (const char* key : {"preprocess_ms", "vision_ms", "projector_ms", "prefill_ms", "ttft_ms", "decode_ms_per_token"})
    EXPECT_TRUE(records[0]["timings"].contains(key)) << key;
  EXPECT_GT(records[0]["timings"]["vision_ms"].get<double>(), 0);  // the background encode's time
  EXPECT_EQ(records[2]["text"], run_answer(kImageB));

  ASSERT_TRUE(records[1].contains("error"));
  EXPECT_FALSE(records[1].contains("text"));
  EXPECT_NE(records[1]["error"].get<std::string>().find("broken.png"), std::string::npos) << records[1];
}

TEST_F(Caption, WithoutPrefetchTheRecordsAreTheSame) {
  auto with = run("caption" + kModelFlags + "-q " + q(dir_ / "images"));
  auto without = run("caption" + kModelFlags + "-q --prefetch 0 " + q(dir_ / "images"));
  ASSERT_EQ(with.exit_code, 0) << with.out;
  ASSERT_EQ(without.exit_code, 0) << without.out;
  auto a = parse_jsonl(with.out), b = parse_jsonl(without.out);
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["path"], b[i]["path"]);
    EXPECT_EQ(a[i]["text"], b[i]["text"]);
  }
}

TEST_F(Caption, ResumeAfterACrashCutsTheHalfLineAndCaptionsEachImageOnce) {
  fs::copy_file(kImageA, dir_ / "images" / "c.png");
  const fs::path out = dir_ / "out.jsonl";
  auto first = run("caption" + kModelFlags + "-q " + q(dir_ / "images") + " -o " + q(out));
  ASSERT_EQ(first.exit_code, 0) << first.out;
  const std::string complete = read_file(out);
  auto full = parse_jsonl(complete);
  ASSERT_EQ(full.size(), 3u);

  // A crash while the second record was being written: the first line whole, half of the second.
  const size_t first_end = complete.find('\n') + 1;
  const size_t second_end = complete.find('\n', first_end) + 1;
  std::ofstream(out, std::ios::binary | std::ios::trunc) << complete.substr(0, first_end + (second_end - first_end) / 2);

  auto resumed = run("caption" + kModelFlags + q(dir_ / "images") + " -o " + q(out) + " --resume 2>&1");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("half-written"), std::string::npos) << resumed.out;
  auto records = parse_jsonl(read_file(out));
  ASSERT_EQ(records.size(), 3u) << read_file(out);
  std::map<std::string, std::string> texts;
  for (const auto& record : records) texts[record["path"]] = record["text"];
  ASSERT_EQ(texts.size(), 3u);  // each path once
  for (const auto& record : full) EXPECT_EQ(texts[record["path"]], record["text"]) << record["path"];

  // Nothing left to do: no model work, nothing appended.
  auto again = run("caption" + kModelFlags + "-q " + q(dir_ / "images") + " -o " + q(out) + " --resume");
  EXPECT_EQ(again.exit_code, 0) << again.out;
  EXPECT_EQ(parse_jsonl(read_file(out)).size(), 3u);
}

TEST_F(Caption, AnOutputWithCaptionsIsNotAppendedToWithoutResume) {
  const fs::path out = dir_ / "out.jsonl";
  std::ofstream(out) << "{\"path\": \"x.png\", \"text\": \"earlier\"}\n";
  auto r = run("caption" + kModelFlags + q(dir_ / "images") + " -o " + q(out) + " 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("--resume"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(out), "{\"path\": \"x.png\", \"text\": \"earlier\"}\n");
}

TEST_F(Caption, ListFileStdinAndGlob) {
  const std::string a = (dir_ / "images" / "a.png").string(), b = (dir_ / "images" / "sub" / "b.JPG").string();
  std::ofstream(dir_ / "list.txt") << b << "\r\n\n" << a << "\n";
  auto from_file = run("caption" + kModelFlags + "-q --list " + q(dir_ / "list.txt"));
  ASSERT_EQ(from_file.exit_code, 0) << from_file.out;
  auto records = parse_jsonl(from_file.out);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0]["path"], b);  // the list's order
  EXPECT_EQ(records[1]["path"], a);

  const std::string missing = (dir_ / "missing.png").string();
  auto from_stdin = run("caption" + kModelFlags + "-q --list -", a + "\n" + missing + "\n");
  EXPECT_EQ(from_stdin.exit_code, 1) << from_stdin.out;
  records = parse_jsonl(from_stdin.out);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0]["text"], run_answer(kImageA));
  EXPECT_NE(records[1]["error"].get<std::string>().find("missing.png"), std::string::npos) << records[1];

  auto globbed = run("caption" + kModelFlags + "-q " + q(dir_ / "images" / "*.png"));
  ASSERT_EQ(globbed.exit_code, 0) << globbed.out;
  records = parse_jsonl(globbed.out);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0]["path"], a);
}

TEST_F(Caption, ExitStatusCountsFailuresUpTo125) {
  fs::create_directories(dir_ / "bad");
  for (int i = 0; i < 130; ++i) std::ofstream(dir_ / "bad" / ("img" + std::to_string(i) + ".jpg")) << "garbage";
  auto r = run("caption" + kModelFlags + "-q " + q(dir_ / "bad") + " -o " + q(dir_ / "out.jsonl"));
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_EQ(parse_jsonl(read_file(dir_ / "out.jsonl")).size(), 130u);

  std::ofstream(dir_ / "images" / "bad.webp") << "RIFF....WEBP";
  r = run("caption" + kModelFlags + "-q " + q(dir_ / "images"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(parse_jsonl(r.out).size(), 3u);
}

TEST_F(Caption, ProgressLinesGoToStderrWhenItIsNotATerminal) {
  auto r = run("caption" + kModelFlags + q(dir_ / "images") + " 2>&1 >/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("caption: 2/2 images"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("img/s"), std::string::npos) << r.out;
}

}  // namespace
