#pragma once
// Every failure the user can cause (bad file, bad shape, bad flag) is reported as fastvlm::Error with a
// message that names the file or key and what was expected; the CLI prints it on one line and exits 1.
#include <stdexcept>
#include <string>

namespace fastvlm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace fastvlm
