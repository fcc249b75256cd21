#pragma once
// Answers as timed cues: SubRip (.srt), WebVTT (.vtt) or JSON Lines.
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

namespace fastvlm::video {

enum class CueFormat { Srt, Vtt, Jsonl };

struct Cue {
  double start = 0, end = 0;  // seconds on the stream's clock
  std::string text;
  nlohmann::json details = nlohmann::json::object();  // JSONL only: merged into the line (timings, token counts)
};

// "HH:MM:SS,mmm" (SRT) or "HH:MM:SS.mmm" (WebVTT).
std::string format_timestamp(double seconds, char millisecond_separator);

class CueWriter {
 public:
  // Writes the format's header (WebVTT's) at once.
  CueWriter(std::ostream& out, CueFormat format);
  // Writes and flushes one cue, so a reader of a live run sees each as soon as it is known.
  void write(const Cue& cue);

 private:
  std::ostream& out_;
  CueFormat format_;
  int index_ = 0;
};

}  // namespace fastvlm::video
