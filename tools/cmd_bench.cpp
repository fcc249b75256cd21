// fastvlm bench: the whole pipeline timed over several repetitions, reported as medians and ranges.
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "commands.h"
#include "common.h"
#include "core/error.h"

namespace fastvlm::cli {

namespace {

struct Stats {
  double median, min, max;
};

Stats summarize(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  double median = n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
  return {median, values.front(), values.back()};
}

double peak_rss_mb() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace

void add_bench_command(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    GenerateOptions generate;
    std::string image, prompt = "Describe the image.";
    int reps = 5;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();
  flags->generate.max_tokens = 64;
  CLI::App* command = app.add_subcommand("bench", "Time load, vision, prefill, TTFT and decode over repetitions");
  flags->model.add_to(*command);
  command->add_option("--image", flags->image, "Image file (without: a text-only prompt)");
  command->add_option("-p,--prompt", flags->prompt, "The question");
  command->add_option("-n,--max-tokens", flags->generate.max_tokens, "Tokens to generate per repetition")
      ->check(CLI::PositiveNumber);
  command->add_option("--reps", flags->reps, "Repetitions (each encodes the image again)")->check(CLI::PositiveNumber);
  command->add_flag("--json", flags->json, "Print one JSON object");
  command->callback([flags] {
    // Every repetition must run the vision tower, so the embedding cache is off.
    flags->model.engine.image_cache_entries = 0;
    auto engine = flags->model.load();
    ImageInput image = ImageInput::file(flags->image);
    std::map<std::string, std::vector<double>> samples;
    int prompt_tokens = 0, generated = 0;
    for (int rep = 0; rep < flags->reps; ++rep) {
      Session session(*engine);
      Generation g = session.ask(flags->prompt, flags->image.empty() ? nullptr : &image, flags->generate);
      const Timings& t = g.timings;
      const nlohmann::json rep_timings = timings_json(t);
      for (const auto& [key, value] : rep_timings.items())
        if (key != "load_ms") samples[key].push_back(value.get<double>());
      prompt_tokens = g.prompt_tokens;
      generated = int(g.token_ids.size());
      if (!flags->json)
        std::fprintf(stderr, "rep %d: ttft %.1f ms, vision %.1f ms, prefill %.1f ms, decode %.2f ms/token\n", rep + 1,
                     t.ttft_ms, t.vision_ms, t.prefill_ms, t.decode_ms_per_token);
    }
    const ModelInfo& info = engine->info();
    nlohmann::json timings = {{"load_ms", engine->load_ms()}}, ranges = nlohmann::json::object();
    for (const auto& [key, values] : samples) {
      Stats s = summarize(values);
      timings[key] = s.median;
      ranges[key] = {s.min, s.max};
    }
    // Achieved throughput: 2 flops per multiply-accumulate.
    const double vision_gflops = flags->image.empty() ? 0 : 2e-6 * double(info.vision_macs) / timings["vision_ms"].get<double>();
    const double prefill_gflops = 2e-6 * double(engine->prefill_macs(prompt_tokens)) / timings["prefill_ms"].get<double>();
    nlohmann::json out = {{"model", info.path},
                          {"image_size", flags->image.empty() ? 0 : info.image_size},
                          {"prompt_tokens", prompt_tokens},
                          {"generated_tokens", generated},
                          {"reps", flags->reps},
                          {"threads", flags->model.engine.threads},
                          {"timings", timings},
                          {"timings_min_max", ranges},
                          {"vision_gflops", vision_gflops},
                          {"prefill_gflops", prefill_gflops},
                          {"peak_rss_mb", peak_rss_mb()}};
    if (flags->json) {
      std::printf("%s\n", out.dump().c_str());
      return;
    }
    std::printf("model %s, %d prompt positions, %d generated, %d reps (median [min - max])\n", info.path.c_str(),
                prompt_tokens, generated, flags->reps);
    std::printf("  %-22s %10.1f ms\n", "load", engine->load_ms());
    for (const auto& [key, values] : samples) {
      Stats s = summarize(values);
      std::printf("  %-22s %10.2f ms   [%.2f - %.2f]\n", key.c_str(), s.median, s.min, s.max);
    }
    std::printf("  %-22s %10.1f GFLOP/s\n", "vision", vision_gflops);
    std::printf("  %-22s %10.1f GFLOP/s\n", "prefill", prefill_gflops);
    std::printf("  %-22s %10.1f MB\n", "peak RSS", peak_rss_mb());
  });
}

}  // namespace fastvlm::cli
