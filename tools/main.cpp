// fastvlm: run Apple's FastVLM vision-language models on the CPU.
#include <cstdio>
#include <cstdlib>
#include <exception>

#include <unistd.h>

#include "commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  // OpenMP threads spin only briefly at a barrier, then sleep. Spinning long (libgomp's default) collapses
  // when another process takes a core (decode went from 8 ms to 1.5 s per token on a shared 2-core machine);
  // sleeping at once (OMP_WAIT_POLICY=passive) costs a futex wake-up per barrier, 40% of an idle machine's
  // decode step. GOMP_SPINCOUNT=1000 measured within 10% of the best of both (workload W, int8 + q8, 2
  // threads: decode 32 ms idle and 63 ms beside a busy loop, against 29 / 131 spinning and 42 / 60 passive).
  // A user's own setting wins. The OpenMP runtime reads its environment when it is loaded, before main, so
  // the setting only takes effect in a fresh image of this program: exec it once more.
  if (!std::getenv("OMP_WAIT_POLICY") && !std::getenv("GOMP_SPINCOUNT")) {
    setenv("GOMP_SPINCOUNT", "1000", 1);
    execv("/proc/self/exe", argv);  // returns only on failure: then run on with the runtime's default
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
