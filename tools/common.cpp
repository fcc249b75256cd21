#include "common.h"

#include <cstdio>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "hub/hub.h"

namespace fastvlm::cli {

void ModelFlags::add_to(CLI::App& command) {
  command.add_option("-m,--model", model,
                     "Model directory, or a Hugging Face hub id owner/name[@revision] (default " +
                         std::string(hub::kDefaultModel) + ", downloaded on first use)");
  command.add_flag("-q,--quiet", quiet, "No download progress");
  command.add_option("--threads", engine.threads, "Threads (0: one per core)")->check(CLI::NonNegativeNumber);
  command.add_option("--ctx", engine.context, "Context size in positions")->check(CLI::PositiveNumber);
  command.add_option("--image-size", engine.image_size, "Image input size, a multiple of 64 (0: the model's own)")
      ->check(CLI::NonNegativeNumber);
  command.add_option("--max-image-pixels", engine.max_image_pixels, "Refuse images with more pixels than this")
      ->check(CLI::PositiveNumber);
  command.add_option("--dtype", engine.precision,
                   "Compute precision: auto (default: the fastest path this CPU has within the README's accuracy "
                   "bounds: int8 vision and q8_0 LLM linears from AVX2 up), f32 (reference-exact), bf16 "
                   "(within 2e-2), int8 (bf16, or f32 without AVX512-BF16, with the vision ConvFFN and attention "
                   "layers on int8, ~2% off)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, Precision>{{"auto", Precision::Auto}, {"f32", Precision::F32}, {"bf16", Precision::Bf16}, {"int8", Precision::Int8}},
          CLI::ignore_case));
  command.add_flag("-v,--verbose", verbose, "Say what the engine runs (the precision --dtype resolved to)");
  command.add_option("--chat-format", engine.chat_format,
                     "Prompt markup: chatml, llama2, llama3, deepseek, phi3 or fastvlm (default: the model's own, "
                     "recognised from its chat_template)");
}

std::unique_ptr<Engine> ModelFlags::load() const {
  hub::DownloadOptions download;
  download.quiet = quiet;
  const auto dir = hub::resolve_model(model.empty() ? hub::kDefaultModel : std::string_view(model), download);
  auto loaded = Engine::load(dir.string(), engine);
  if (verbose) std::fprintf(stderr, "precision: %s\n", loaded->info().precision.c_str());
  return loaded;
}

void add_generate_flags(CLI::App& command, GenerateOptions& options) {
  command.add_option("-n,--max-tokens", options.max_tokens, "Maximum tokens to generate")->check(CLI::NonNegativeNumber);
  command.add_option("--temp", options.sampling.temperature, "Sampling temperature (0: greedy)")->check(CLI::NonNegativeNumber);
  command.add_option("--top-k", options.sampling.top_k, "Keep the k most likely tokens (0: all)")->check(CLI::NonNegativeNumber);
  command.add_option("--top-p", options.sampling.top_p, "Nucleus sampling threshold")->check(CLI::Range(0.0f, 1.0f));
  command.add_option("--min-p", options.sampling.min_p, "Drop tokens less likely than min-p x the best")->check(CLI::Range(0.0f, 1.0f));
  command.add_option("--repeat-penalty", options.sampling.repeat_penalty, "Penalty for repeated tokens (1: off)")
      ->check(CLI::PositiveNumber);
  command.add_option("--repeat-last-n", options.sampling.repeat_last_n, "Tokens the repeat penalty looks back over (-1: all)")
      ->check(CLI::Range(-1, 1 << 30));
  command.add_option("--seed", options.sampling.seed, "Random seed for sampling");
  command.add_option("--stop", options.stop, "Stop before this text (repeatable)");
}

nlohmann::json timings_json(const Timings& t) {
  return {{"load_ms", t.load_ms},     {"preprocess_ms", t.preprocess_ms}, {"vision_ms", t.vision_ms},
          {"projector_ms", t.projector_ms}, {"prefill_ms", t.prefill_ms}, {"ttft_ms", t.ttft_ms},
          {"decode_ms_per_token", t.decode_ms_per_token}};
}

}  // namespace fastvlm::cli
