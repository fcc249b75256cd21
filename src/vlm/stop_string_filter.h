#pragma once
// Streams generated text while holding back anything that could still become a stop string.
#include <string>
#include <string_view>
#include <vector>

namespace fastvlm {

class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends `piece`; returns the text now safe to emit. Sets stopped() when a stop string appeared (the
  // text is then cut just before it).
  std::string push(std::string_view piece);
  // Whatever was held back, at the end of generation.
  std::string finish();
  bool stopped() const { return stopped_; }
  const std::string& text() const { return text_; }

 private:
  std::vector<std::string> stops_;
  std::string text_;
  size_t emitted_ = 0;
  bool stopped_ = false;
};

}  // namespace fastvlm
