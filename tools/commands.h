#pragma once
// Each subcommand of the `fastvlm` CLI lives in its own cmd_<name>.cpp and registers itself here.
#include <CLI/CLI.hpp>

namespace fastvlm::cli {

}  // namespace fastvlm::cli
