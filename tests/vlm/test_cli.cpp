// The `fastvlm` binary as a user runs it: golden answers through `run --json` and `encode`, a chat
// driven through a pipe, and one-line errors with a non-zero exit for bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "run_command.h"

namespace fs = std::filesystem;

namespace {

const fs::path kTiny = fs::path(FASTVLM_SHARED_DIR) / "fixtures" / "tiny-fastvlm";
const fs::path kGolden = kTiny / "golden";
const std::string kBinary = std::string(FASTVLM_BIN_DIR) + "/fastvlm";

using Result = fastvlm::test_support::CommandResult;

// Runs the CLI with `stdin_text` as its standard input.
Result run(const std::string& args, bool merge_stderr = false, const std::string& stdin_text = "") {
  fs::path input = fs::temp_directory_path() / ("fastvlm-cli-in-" + std::to_string(::getpid()));
  std::ofstream(input) << stdin_text;
  const Result result = fastvlm::test_support::run_command(kBinary + " " + args + " < " + input.string() +
                                                           (merge_stderr ? " 2>&1" : ""));
  fs::remove(input);
  return result;
}

std::string quoted(const fs::path& p) { return fastvlm::test_support::shell_quote(p.string()); }

nlohmann::json golden() { return nlohmann::json::parse(std::ifstream(kGolden / "golden.json")); }

}  // namespace

TEST(Cli, RunJsonGivesTheGoldenTokens) {
  Result r = run("run -m " + quoted(kTiny) + " --image " + quoted(kGolden / "image_a_320x200.png") +
                 " -p 'Describe the image.' -n 16 --temp 0 --json --dtype f32");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto out = nlohmann::json::parse(r.out);
  auto entry = golden()["images"]["image_a_320x200"];
  auto expected = entry["greedy_tokens"].get<std::vector<int>>();
  auto actual = out["token_ids"].get<std::vector<int>>();
  size_t exact = entry["tokens_exact_through"].get<size_t>() + 1;
  ASSERT_GE(actual.size(), exact);
  EXPECT_EQ(std::vector<int>(actual.begin(), actual.begin() + exact), std::vector<int>(expected.begin(), expected.begin() + exact));
  EXPECT_EQ(out["prompt_tokens"], 40);
  for (const char* key : {"load_ms", "preprocess_ms", "vision_ms", "projector_ms", "prefill_ms", "ttft_ms",
                          "decode_ms_per_token"})
    EXPECT_TRUE(out["timings"].contains(key)) << key;
}

TEST(Cli, EncodeWritesTheGoldenTensors) {
  fs::path output = fs::temp_directory_path() / ("fastvlm-encode-" + std::to_string(::getpid()) + ".safetensors");
  Result r = run("encode -m " + quoted(kTiny) + " --image " + quoted(kGolden / "image_b_97x131.jpg") + " -o " +
                 quoted(output), true);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto mine = fastvlm::SafetensorsFile::open(output);
  auto reference = fastvlm::SafetensorsFile::open(kGolden / "image_b_97x131.safetensors");
  const auto* pixels = mine->find("pixel_values");
  ASSERT_NE(pixels, nullptr);
  EXPECT_EQ(pixels->shape, (fastvlm::Shape{1, 3, 256, 256}));
  EXPECT_EQ(0, std::memcmp(pixels->data, reference->find("pixel_values")->data, pixels->nbytes));
  EXPECT_EQ(mine->find("image_features")->shape, (fastvlm::Shape{16, 512}));
  EXPECT_EQ(mine->find("image_embeds")->shape, (fastvlm::Shape{16, 64}));
  fs::remove(output);
}

TEST(Cli, ChatThroughAPipe) {
  std::string script = "/image " + (kGolden / "image_a_320x200.png").string() +
                       "\nDescribe the image.\nAnd again?\n/reset\nHello\n/quit\nnever read\n";
  Result r = run("chat -m " + quoted(kTiny) + " -n 4 --temp 0", false, script);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("(image attached"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(conversation cleared)"), std::string::npos) << r.out;
  // The first turn must answer exactly as `run` does for the same image and question.
  Result single = run("run -m " + quoted(kTiny) + " --image " + quoted(kGolden / "image_a_320x200.png") +
                      " -p 'Describe the image.' -n 4 --temp 0 --json");
  ASSERT_EQ(single.exit_code, 0) << single.out;
  std::string first_answer = nlohmann::json::parse(single.out)["text"];
  EXPECT_NE(r.out.find(")\n" + first_answer + "\n"), std::string::npos) << r.out;
}

TEST(Cli, BadInputGivesOneLineErrorAndNonZeroExit) {
  fs::path dir = fs::temp_directory_path() / ("fastvlm-cli-bad-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "empty.png").close();
  {
    std::ifstream in(kGolden / "image_b_97x131.jpg", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(dir / "truncated.jpg", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  const std::string model = " -m " + quoted(kTiny);
  const std::pair<std::string, std::string> cases[] = {
      {"run" + model + " --image " + quoted(dir / "empty.png") + " -p hi", "empty.png"},
      {"run" + model + " --image " + quoted(dir / "truncated.jpg") + " -p hi", "truncated.jpg"},
      {"run" + model + " --image " + quoted(dir / "missing.png") + " -p hi", "missing.png"},
      {"run -m " + quoted(dir) + " -p hi", "config.json"},
      {"run" + model + " --ctx 16 -p 'Describe the image.'", "context"},
      {"run" + model + " --image-size 100 -p hi", "multiple of 64"},
      {"encode" + model + " --image " + quoted(kGolden / "image_a_320x200.png") + " -o /nonexistent/dir/out.safetensors",
       "/nonexistent/dir"},
  };
  for (const auto& [args, needle] : cases) {
    Result r = run(args, true);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.out.find("error"), std::string::npos) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << "\n" << r.out;
  }
  fs::remove_all(dir);
}
