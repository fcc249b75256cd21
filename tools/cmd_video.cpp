// fastvlm video: answer a prompt about frames of a video (one every N seconds, or one per scene) and
// write the answers as subtitles (SRT, WebVTT) or JSON Lines. `-` reads a live stream from stdin.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "video/cues.h"
#include "video/newest_frame.h"
#include "video/png.h"
#include "video/sampler.h"
#include "video/video_reader.h"

namespace fastvlm::cli {
namespace {

struct VideoFlags {
  ModelFlags model;
  GenerateOptions generate;
  std::string input, output, prompt = "Describe what you see in one sentence.", system;
  video::SamplingOptions sampling;
  double scene = 0;
  video::CueFormat format = video::CueFormat::Srt;
};

// Asks about each sampled frame and writes a cue once the next frame (or the end) says when it ends.
class Captioner {
 public:
  Captioner(const VideoFlags& flags, const Engine& engine, std::ostream& out)
      : flags_(flags), session_(engine), writer_(out, flags.format), progress_(isatty(STDERR_FILENO)) {
    if (!flags.system.empty()) session_.set_system_prompt(flags.system);
  }

  void answer(double seconds, const video::RgbImage& frame, std::optional<int> skipped_before) {
    finish_pending(seconds);
    const ImageInput image = ImageInput::memory(video::encode_png(frame));
    // Each frame is its own question: no earlier answer may colour this one.
    session_.reset();
    const Generation answer = session_.ask(flags_.prompt, &image, flags_.generate);
    nlohmann::json details = {{"prompt_tokens", answer.prompt_tokens},
                              {"completion_tokens", answer.token_ids.size()},
                              {"timings", timings_json(answer.timings)}};
    if (skipped_before) details["skipped_frames"] = *skipped_before;
    pending_ = video::Cue{seconds, seconds, answer.text, std::move(details)};
    ++answered_;
    if (progress_)
      std::fprintf(stderr, "\rfastvlm video: %s, %d frame%s answered, TTFT %.0f ms ",
                   video::format_timestamp(seconds, '.').c_str(), answered_, answered_ == 1 ? "" : "s",
                   answer.timings.ttft_ms);
  }

  void finish(double end_seconds) {
    finish_pending(end_seconds);
    if (progress_) std::fprintf(stderr, "\n");
  }

  int answered() const { return answered_; }

 private:
  void finish_pending(double end) {
    if (!pending_) return;
    pending_->end = std::max(end, pending_->start);
    writer_.write(*pending_);
    pending_.reset();
  }

  const VideoFlags& flags_;
  Session session_;
  video::CueWriter writer_;
  bool progress_;
  std::optional<video::Cue> pending_;
  int answered_ = 0;
};

// A file: every frame is decoded in order and each sampled one answered before decoding goes on.
void caption_file(video::VideoReader& reader, video::FrameSampler& sampler, Captioner& captioner) {
  while (reader.next()) {
    if (sampler.take(reader.seconds(), sampler.needs_thumbnails() ? reader.thumbnail() : std::vector<uint8_t>{}))
      captioner.answer(reader.seconds(), reader.rgb(), std::nullopt);
  }
  captioner.finish(reader.end_seconds());
}

// A live stream: decoding never waits for the model. Whenever an answer ends, the newest sampled
// frame is answered next and the ones it replaced are reported as skipped.
void caption_live(video::VideoReader& reader, video::FrameSampler& sampler, Captioner& captioner) {
  video::NewestFrame newest;
  std::atomic<bool> stopping{false};  // the model failed: the decoder stops at its next frame
  std::thread decoder([&] {
    try {
      while (!stopping && reader.next())
        if (sampler.take(reader.seconds(), sampler.needs_thumbnails() ? reader.thumbnail() : std::vector<uint8_t>{}))
          newest.put(reader.seconds(), reader.rgb());
      newest.close();
    } catch (...) {
      newest.close(std::current_exception());
    }
  });
  int skipped = 0;
  try {
    while (std::optional<video::SampledFrame> frame = newest.take()) {
      skipped += frame->skipped_before;
      captioner.answer(frame->seconds, frame->image, frame->skipped_before);
    }
  } catch (...) {
    stopping = true;
    decoder.join();
    throw;
  }
  decoder.join();
  captioner.finish(reader.end_seconds());
  std::fprintf(stderr, "fastvlm video: %d frames answered, %d skipped while the model was busy\n",
               captioner.answered(), skipped);
}

}  // namespace

void add_video_command(CLI::App& app) {
  auto flags = std::make_shared<VideoFlags>();
  CLI::App* command = app.add_subcommand("video", "Answer a prompt about frames of a video, written as subtitles");
  flags->model.add_to(*command);
  add_generate_flags(*command, flags->generate);
  command->add_option("file", flags->input, "Video file, or - for a live stream on stdin")->required();
  command->add_option("-p,--prompt", flags->prompt, "The question asked about each frame")->capture_default_str();
  command->add_option("--system", flags->system, "System prompt");
  auto* every = command->add_option("--every", flags->sampling.every_seconds,
                                    "Answer one frame every SECONDS of video (0: every frame)")
                    ->check(CLI::NonNegativeNumber)
                    ->capture_default_str();
  command->add_option("--scene", flags->scene,
                      "Answer a frame on each scene change instead: when it differs from the previous frame by "
                      "more than THRESHOLD (0-1, mean absolute difference of small grey images; 0.2 suits hard cuts)")
      ->check(CLI::Range(0.0, 1.0))
      ->excludes(every);
  command->add_option("--format", flags->format, "Output format: srt, vtt or jsonl (adds timings and token counts)")
      ->transform(CLI::CheckedTransformer(std::map<std::string, video::CueFormat>{
          {"srt", video::CueFormat::Srt}, {"vtt", video::CueFormat::Vtt}, {"jsonl", video::CueFormat::Jsonl}}))
      ->capture_default_str();
  command->add_option("-o,--output", flags->output, "Output file (default: stdout)");
  command->callback([flags, command] {
    if (command->count("--scene")) flags->sampling.scene = flags->scene;
    // Open the video before loading the model, so that a wrong file fails at once.
    video::VideoReader reader(flags->input);
    auto engine = flags->model.load();
    std::ofstream file;
    if (!flags->output.empty()) {
      file.open(flags->output);
      if (!file) throw Error("cannot write " + flags->output);
    }
    Captioner captioner(*flags, *engine, flags->output.empty() ? std::cout : file);
    video::FrameSampler sampler(flags->sampling);
    if (flags->input == "-")
      caption_live(reader, sampler, captioner);
    else
      caption_file(reader, sampler, captioner);
  });
}

}  // namespace fastvlm::cli
