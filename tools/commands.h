#pragma once
// Each subcommand of the `fastvlm` CLI lives in its own cmd_<name>.cpp and registers itself here.
#include <CLI/CLI.hpp>

namespace fastvlm::cli {

void add_encode_command(CLI::App& app);
void add_hub_commands(CLI::App& app);  // pull, list
void add_run_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_tokenize_commands(CLI::App& app);  // tokenize, detokenize
void add_quantize_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_caption_command(CLI::App& app);
void add_video_command(CLI::App& app);
}  // namespace fastvlm::cli
