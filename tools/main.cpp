// fastvlm: run Apple's FastVLM vision-language models on the CPU.
#include <cstdio>
#include <cstdlib>
#include <exception>

#include <unistd.h>

#include "commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  // Threads that sleep at OpenMP barriers instead of spinning: on a shared 2-core machine a spinning
  // thread that lost its core turns every barrier into a scheduler tick (decode went from 8 ms to 1.5 s
  // per token). A user's own setting wins. The OpenMP runtime reads its environment when it is loaded,
  // before main, so the setting only takes effect in a fresh image of this program: exec it once more.
  if (!std::getenv("OMP_WAIT_POLICY")) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: then run on, spinning
  }
  CLI::App app{"fastvlm: FastVLM vision-language models on the CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "fastvlm 0.1.0");
  fastvlm::cli::add_encode_command(app);
  fastvlm::cli::add_hub_commands(app);
  fastvlm::cli::add_run_command(app);
  fastvlm::cli::add_bench_command(app);
  fastvlm::cli::add_chat_command(app);
  fastvlm::cli::add_tokenize_commands(app);
  fastvlm::cli::add_quantize_command(app);
  fastvlm::cli::add_serve_command(app);
  fastvlm::cli::add_caption_command(app);
  fastvlm::cli::add_video_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    // Subcommands run inside parse() via their callbacks; any failure ends here as one line.
    std::fprintf(stderr, "fastvlm: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
