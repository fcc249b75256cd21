#include "video/cues.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace fastvlm::video {
namespace {

// A blank line ends a cue in both formats, so answers keep their line breaks but lose empty lines.
std::string without_blank_lines(const std::string& text) {
  std::string out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (line.find_first_not_of(" \t\r") != std::string::npos) out += (out.empty() ? "" : "\n") + line;
    start = end + 1;
  }
  return out;
}

// WebVTT cue text is markup: '&' and '<' must be escaped, and escaping '>' too keeps out "-->", which
// may not appear in a cue at all.
std::string vtt_text(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '&') out += "&amp;";
    else if (text[i] == '<') out += "&lt;";
    else if (text[i] == '>') out += "&gt;";
    else out += text[i];
  }
  return out;
}

}  // namespace

std::string format_timestamp(double seconds, char millisecond_separator) {
  const long long total_ms = std::llround(std::max(seconds, 0.0) * 1000);
  char text[32];
  std::snprintf(text, sizeof text, "%02lld:%02lld:%02lld%c%03lld", total_ms / 3600000, total_ms / 60000 % 60,
                total_ms / 1000 % 60, millisecond_separator, total_ms % 1000);
  return text;
}

CueWriter::CueWriter(std::ostream& out, CueFormat format) : out_(out), format_(format) {
  if (format_ == CueFormat::Vtt) out_ << "WEBVTT\n\n" << std::flush;
}

void CueWriter::write(const Cue& cue) {
  ++index_;
  // An empty cue would end at its timing line: give the reader something to show.
  std::string text = without_blank_lines(cue.text);
  if (text.empty()) text = "…";
  switch (format_) {
    case CueFormat::Srt:
      out_ << index_ << '\n'
           << format_timestamp(cue.start, ',') << " --> " << format_timestamp(cue.end, ',') << '\n'
           << text << "\n\n";
      break;
    case CueFormat::Vtt:
      out_ << format_timestamp(cue.start, '.') << " --> " << format_timestamp(cue.end, '.') << '\n'
           << vtt_text(text) << "\n\n";
      break;
    case CueFormat::Jsonl: {
      nlohmann::json line = {{"index", index_}, {"start", cue.start}, {"end", cue.end}, {"text", cue.text}};
      line.update(cue.details);
      out_ << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
      break;
    }
  }
  out_.flush();
}

}  // namespace fastvlm::video
