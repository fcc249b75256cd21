#pragma once
// Running a shell command from a test (the fastvlm binary, curl) and capturing what it prints.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace fastvlm::test_support {

struct CommandResult {
  std::string out;  // what the command wrote to the pipe (its stdout, plus stderr where it redirects 2>&1)
  int exit_code;    // -1 when it did not exit normally
};

inline CommandResult run_command(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return {"", -1};
  std::string out;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) out.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

// `text` as one single-quoted shell word.
inline std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace fastvlm::test_support
