// fastvlm video: decoding, frame sampling, cue formats, and the CLI on test videos made with the ffmpeg CLI
// at test time (3 s of testsrc at 10 fps, cut to SMPTE bars at 1.5 s).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "run_command.h"
#include "video/cues.h"
#include "video/newest_frame.h"
#include "video/sampler.h"
#include "video/video_reader.h"

namespace fastvlm::video {
namespace {

namespace fs = std::filesystem;
using test_support::run_command;
using test_support::shell_quote;

const std::string kModel = std::string(FASTVLM_SHARED_DIR) + "/fixtures/tiny-fastvlm";

class VideoFiles : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("fastvlm_video_test_" + std::to_string(getpid()));
    fs::create_directories(dir_);
    const std::string ffmpeg = std::string(FASTVLM_FFMPEG) + " -v error -y ";
    // Matroska streams through a pipe (its index is not needed), which the stdin test relies on.
    ASSERT_EQ(run_command(ffmpeg + "-f lavfi -i testsrc=size=160x120:rate=10:duration=1.5 "
                          "-f lavfi -i smptebars=size=160x120:rate=10:duration=1.5 "
                          "-filter_complex '[0:v][1:v]concat=n=2:v=1[v]' -map '[v]' -c:v mpeg4 -q:v 2 " +
                          shell_quote(path("cut.mkv")) + " 2>&1").exit_code, 0);
    ASSERT_EQ(run_command(ffmpeg + "-f lavfi -i sine=duration=1 " + shell_quote(path("sound.wav")) + " 2>&1").exit_code, 0);
    std::ofstream(path("notes.txt")) << "not a video\n";
    // The header and first frames intact, then garbage where the rest of the frames were.
    fs::copy_file(path("cut.mkv"), path("corrupt.mkv"));
    std::fstream corrupt(path("corrupt.mkv"), std::ios::in | std::ios::out | std::ios::binary);
    corrupt.seekp(std::streamoff(fs::file_size(path("cut.mkv")) / 3));
    for (int i = 0; i < 20000; ++i) corrupt.put(char(i * 7919 % 251));
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }

  // `fastvlm video` on the tiny fixture, greedy and short.
  static test_support::CommandResult fastvlm_video(const std::string& arguments) {
    return run_command(std::string(FASTVLM_BIN_DIR) + "/fastvlm video -m " + shell_quote(kModel) +
                       " -q --threads 1 --temp 0 -n 4 " + arguments);
  }

  static inline fs::path dir_;
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(Cues, TimestampsInBothStyles) {
  EXPECT_EQ(format_timestamp(0, ','), "00:00:00,000");
  EXPECT_EQ(format_timestamp(3723.4567, ','), "01:02:03,457");
  EXPECT_EQ(format_timestamp(1.5, '.'), "00:00:01.500");
}

TEST(Cues, SrtNumbersCuesAndDropsBlankLines) {
  std::ostringstream out;
  CueWriter writer(out, CueFormat::Srt);
  writer.write({0, 1, "A cat.\n\nOn a mat."});
  writer.write({1, 2.5, ""});
  EXPECT_EQ(out.str(), "1\n00:00:00,000 --> 00:00:01,000\nA cat.\nOn a mat.\n\n"
                       "2\n00:00:01,000 --> 00:00:02,500\n…\n\n");
}

TEST(Cues, VttHasItsHeaderAndEscapesMarkup) {
  std::ostringstream out;
  CueWriter writer(out, CueFormat::Vtt);
  writer.write({2, 3, "a <b> & c --> d"});
  EXPECT_EQ(out.str(), "WEBVTT\n\n00:00:02.000 --> 00:00:03.000\na &lt;b&gt; &amp; c --&gt; d\n\n");
}

TEST(Cues, JsonlMergesTheDetails) {
  std::ostringstream out;
  CueWriter writer(out, CueFormat::Jsonl);
  writer.write({0.5, 1, "hi\n\nthere", {{"prompt_tokens", 7}}});
  const auto line = nlohmann::json::parse(out.str());
  EXPECT_EQ(line["index"], 1);
  EXPECT_EQ(line["start"], 0.5);
  EXPECT_EQ(line["text"], "hi\n\nthere");  // JSON keeps the answer as it was
  EXPECT_EQ(line["prompt_tokens"], 7);
}

TEST(Sampler, EveryTakesTheFirstFrameAtEachMultiple) {
  FrameSampler sampler({1.0, std::nullopt});
  std::vector<double> taken;
  // 10 fps, with times as a millisecond time base rounds them.
  for (int i = 0; i < 30; ++i)
    if (sampler.take(i * 0.1, {})) taken.push_back(i * 0.1);
  ASSERT_EQ(taken.size(), 3u);
  EXPECT_NEAR(taken[1], 1.0, 1e-9);
  EXPECT_NEAR(taken[2], 2.0, 1e-9);
  FrameSampler all({0, std::nullopt});
  EXPECT_TRUE(all.take(0, {}) && all.take(0.1, {}) && all.take(0.2, {}));
}

TEST(Sampler, SceneTakesTheFirstFrameAndCuts) {
  FrameSampler sampler({1.0, 0.2});
  const std::vector<uint8_t> dark(16, 10), darkish(16, 30), bright(16, 200);
  EXPECT_TRUE(sampler.take(0, dark));
  EXPECT_FALSE(sampler.take(0.1, darkish));  // 20/255 apart
  EXPECT_TRUE(sampler.take(0.2, bright));
  EXPECT_FALSE(sampler.take(0.3, bright));
  EXPECT_NEAR(mean_abs_difference(dark, bright), 190.0 / 255, 1e-12);
}

TEST(NewestFrameTest, KeepsOnlyTheNewestAndCountsTheRest) {
  NewestFrame newest;
  newest.put(0, {});
  newest.put(1, {});
  newest.put(2, {});
  auto frame = newest.take();
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->seconds, 2);
  EXPECT_EQ(frame->skipped_before, 2);
  newest.put(3, {});
  newest.close();
  frame = newest.take();
  ASSERT_TRUE(frame);
  EXPECT_EQ(frame->skipped_before, 0);
  EXPECT_FALSE(newest.take());
}

TEST(NewestFrameTest, ADecodingErrorReachesTheTaker) {
  NewestFrame newest;
  newest.put(0, {});
  newest.close(std::make_exception_ptr(Error("bad")));
  EXPECT_THROW(newest.take(), Error);
}

TEST_F(VideoFiles, ReaderGivesEveryFrameOnTheStreamClock) {
  VideoReader reader(path("cut.mkv"));
  int frames = 0;
  while (reader.next()) {
    EXPECT_NEAR(reader.seconds(), frames * 0.1, 1e-6);
    ++frames;
  }
  EXPECT_EQ(frames, 30);
  EXPECT_NEAR(reader.end_seconds(), 3.0, 1e-6);
}

TEST_F(VideoFiles, ReaderConvertsToRgbAndThumbnails) {
  VideoReader reader(path("cut.mkv"));
  ASSERT_TRUE(reader.next());
  const RgbImage image = reader.rgb();
  EXPECT_EQ(image.width, 160);
  EXPECT_EQ(image.height, 120);
  EXPECT_EQ(image.pixels.size(), 160u * 120 * 3);
  EXPECT_EQ(reader.thumbnail().size(), size_t(kThumbnailSide * kThumbnailSide));
}

TEST_F(VideoFiles, ReaderRefusesWhatIsNotAVideo) {
  EXPECT_THROW(VideoReader(path("notes.txt")), Error);
  try {
    VideoReader reader(path("sound.wav"));
    FAIL() << "an audio file has no video stream";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no video stream"), std::string::npos) << e.what();
  }
}

TEST_F(VideoFiles, EverySecondGivesSrtCuesAtZeroOneTwo) {
  const auto result = fastvlm_video(shell_quote(path("cut.mkv")) + " --every 1");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  const auto lines = lines_of(result.out);
  ASSERT_EQ(lines.size(), 12u) << result.out;  // 3 cues of 4 lines
  EXPECT_EQ(lines[0], "1");
  EXPECT_EQ(lines[1], "00:00:00,000 --> 00:00:01,000");
  EXPECT_EQ(lines[5], "00:00:01,000 --> 00:00:02,000");
  EXPECT_EQ(lines[8], "3");
  EXPECT_EQ(lines[9], "00:00:02,000 --> 00:00:03,000");
  EXPECT_FALSE(lines[10].empty());
}

TEST_F(VideoFiles, VttToAFile) {
  const std::string out = path("cues.vtt");
  const auto result = fastvlm_video(shell_quote(path("cut.mkv")) + " --format vtt -o " + shell_quote(out));
  ASSERT_EQ(result.exit_code, 0) << result.out;
  std::ifstream in(out);
  const auto lines = lines_of(std::string(std::istreambuf_iterator<char>(in), {}));
  ASSERT_EQ(lines.size(), 11u);
  EXPECT_EQ(lines[0], "WEBVTT");
  EXPECT_EQ(lines[2], "00:00:00.000 --> 00:00:01.000");
  EXPECT_EQ(lines[8], "00:00:02.000 --> 00:00:03.000");
}

TEST_F(VideoFiles, SceneModeFindsTheCut) {
  const auto result = fastvlm_video(shell_quote(path("cut.mkv")) + " --scene 0.2 --format jsonl");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  const auto lines = lines_of(result.out);
  ASSERT_EQ(lines.size(), 2u) << result.out;
  const auto first = nlohmann::json::parse(lines[0]), second = nlohmann::json::parse(lines[1]);
  EXPECT_EQ(first["start"], 0.0);
  EXPECT_NEAR(first["end"].get<double>(), 1.5, 1e-6);
  EXPECT_NEAR(second["start"].get<double>(), 1.5, 1e-6);
  EXPECT_NEAR(second["end"].get<double>(), 3.0, 1e-6);
  EXPECT_GT(first["prompt_tokens"].get<int>(), 0);
  EXPECT_GT(first["completion_tokens"].get<int>(), 0);
  EXPECT_LE(first["completion_tokens"].get<int>(), 4);
  EXPECT_TRUE(first["timings"].contains("ttft_ms"));
  EXPECT_FALSE(first.contains("skipped_frames"));  // a file waits for the model
}

TEST_F(VideoFiles, StdinRunsLiveAndReportsSkippedFrames) {
  const auto result = run_command("cat " + shell_quote(path("cut.mkv")) + " | " + std::string(FASTVLM_BIN_DIR) +
                                  "/fastvlm video - -m " + shell_quote(kModel) +
                                  " -q --threads 1 --temp 0 -n 4 --format jsonl 2>" + shell_quote(path("live.err")));
  ASSERT_EQ(result.exit_code, 0) << result.out;
  std::ifstream err(path("live.err"));
  const std::string report(std::istreambuf_iterator<char>(err), {});
  int answered = 0, skipped = 0;
  ASSERT_EQ(std::sscanf(report.c_str(), "fastvlm video: %d frames answered, %d skipped", &answered, &skipped), 2) << report;
  // Three frames are sampled (0, 1, 2 s); each was either answered or skipped for a newer one.
  EXPECT_GE(answered, 1);
  EXPECT_EQ(answered + skipped, 3);
  const auto lines = lines_of(result.out);
  ASSERT_EQ(int(lines.size()), answered);
  int skipped_in_lines = 0;
  double previous_start = -1;
  for (const auto& text : lines) {
    const auto line = nlohmann::json::parse(text);
    EXPECT_GT(line["start"].get<double>(), previous_start);
    previous_start = line["start"].get<double>();
    skipped_in_lines += line["skipped_frames"].get<int>();
  }
  EXPECT_EQ(skipped_in_lines, skipped);
}

TEST_F(VideoFiles, BadInputsFailWithOneLine) {
  for (const char* name : {"notes.txt", "sound.wav", "corrupt.mkv", "missing.mkv"}) {
    const auto result = fastvlm_video(shell_quote(path(name)) + " 2>&1 >/dev/null");
    EXPECT_EQ(result.exit_code, 1) << name << ": " << result.out;
    const auto lines = lines_of(result.out);
    ASSERT_EQ(lines.size(), 1u) << name << ": " << result.out;
    EXPECT_EQ(lines[0].rfind("fastvlm: error: " + path(name) + ": ", 0), 0u) << lines[0];
  }
}

}  // namespace
}  // namespace fastvlm::video
