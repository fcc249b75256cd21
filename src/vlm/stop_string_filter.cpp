#include "vlm/stop_string_filter.h"

#include <algorithm>

namespace fastvlm {

std::string StopStringFilter::push(std::string_view piece) {
  text_ += piece;
  size_t safe_end = text_.size();
  for (const auto& stop : stops_) {
    if (stop.empty()) continue;
    size_t search_from = emitted_ > stop.size() ? emitted_ - stop.size() : 0;
    size_t at = text_.find(stop, search_from);
    if (at != std::string::npos) {
      stopped_ = true;
      text_.resize(at);
      safe_end = std::min(safe_end, at);
    }
  }
  if (!stopped_) {
    for (const auto& stop : stops_)
      for (size_t len = std::min(stop.size() - 1, text_.size()); len > 0; --len)
        if (text_.compare(text_.size() - len, len, stop, 0, len) == 0) {
          safe_end = std::min(safe_end, text_.size() - len);
          break;
        }
  }
  safe_end = std::max(safe_end, emitted_);
  std::string out = text_.substr(emitted_, safe_end - emitted_);
  emitted_ = safe_end;
  return out;
}

std::string StopStringFilter::finish() {
  std::string out = text_.substr(emitted_);
  emitted_ = text_.size();
  return out;
}

}  // namespace fastvlm
