#pragma once
// Flags and helpers shared by the subcommands that load a model.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "fastvlm/fastvlm.hpp"

namespace fastvlm::cli {

// -m/--model, -q/--quiet, --threads, --ctx, --image-size, --max-image-pixels, --dtype, -v/--verbose, --chat-format.
struct ModelFlags {
  std::string model;  // empty: the default hub model
  bool quiet = false;
  bool verbose = false;  // print the resolved precision after loading
  EngineOptions engine;
  void add_to(CLI::App& command);
  // The model directory: a local directory as is, a hub id resolved through the cache.
  std::unique_ptr<Engine> load() const;
};

// -n, --temp, --top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n, --seed, --stop.
void add_generate_flags(CLI::App& command, GenerateOptions& options);

nlohmann::json timings_json(const Timings& timings);

}  // namespace fastvlm::cli
