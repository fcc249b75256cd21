#pragma once
// The one exception type of fastvlm.cpp: every failure a caller or a file can cause (a bad path, a corrupt
// checkpoint, an unknown config value, a prompt that does not fit) is thrown as fastvlm::Error, whose
// message names the file, key or request part and what was expected, on one line.
#include <stdexcept>
#include <string>

namespace fastvlm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace fastvlm
