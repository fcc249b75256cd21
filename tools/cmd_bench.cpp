// fastvlm bench: the whole pipeline timed over several repetitions, reported as medians and ranges, then
// (when asked, or by default for a reduced-precision dense model) its accuracy against a float32 reference.
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "io/checkpoint.h"

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

// In MiB (the JSON key `peak_rss_mb` predates the unit being spelled out; it is kept for existing readers).
double peak_rss_mb() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// How far the benched engine is from the f32 reference on the bench's own prompt. Per step the logits
// are compared under teacher forcing (both engines see the reference's tokens), so one early divergence
// does not make every later step incomparable; greedy_prefix shows what free-running generation does.
struct Accuracy {
  std::string reference;
  int steps = 0;  // tokens the reference generated (fewer than -n when it ended its answer)
  double logit_rel_rms_mean = 0, logit_rel_rms_max = 0;
  double last_position_logit_rel_rms = 0;  // of the prompt's last position (the first step, before any forcing)
  int top1_agreement = 0;  // steps where both engines' logits have the same argmax
  int greedy_prefix = 0;   // leading tokens of the benched engine's own greedy answer equal to the reference's
  std::optional<double> image_embeds_rel_err;  // max|diff| / max|ref| of the embeddings the LLM sees
};

// rms(values - reference) / rms(reference).
double relative_rms_error(std::span<const float> values, std::span<const float> reference) {
  double error = 0, norm = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const double diff = double(values[i]) - reference[i];
    error += diff * diff;
    norm += double(reference[i]) * reference[i];
  }
  return std::sqrt(error / norm);
}

double max_relative_error(std::span<const float> values, std::span<const float> reference) {
  double max_diff = 0, max_reference = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(double(values[i]) - reference[i]));
    max_reference = std::max(max_reference, std::fabs(double(reference[i])));
  }
  return max_diff / max_reference;
}

size_t argmax(std::span<const float> values) {
  return size_t(std::max_element(values.begin(), values.end()) - values.begin());  // first of ties, as greedy
}

// Fails before the timed repetitions, not after them, when the reference is not a model directory.
void check_reference(const std::string& reference_dir) {
  try {
    Checkpoint::open(reference_dir);  // reads config.json and the safetensors headers only
  } catch (const Error& e) {
    throw Error("--reference " + reference_dir + " is not a model directory: " + e.what());
  }
}

// One turn of a fresh session: the prompt through the chat format, or as it is when `raw`.
Generation answer(const Engine& engine, const std::string& prompt, bool raw, const ImageInput* image,
                  const GenerateOptions& options) {
  Session session(engine);
  return raw ? session.complete(prompt, options, {}, image) : session.ask(prompt, image, options);
}

// `free_running` is one of the benched engine's own greedy answers to the same prompt.
Accuracy measure_accuracy(const Engine& engine, const std::string& reference_dir, const std::string& prompt, bool raw,
                          const ImageInput* image, int max_tokens, const Generation& free_running) {
  EngineOptions reference_options = engine.options();
  reference_options.precision = Precision::F32;
  reference_options.image_cache_entries = 1;  // the image is encoded for the answer and again for the embeddings
  std::unique_ptr<Engine> reference;
  try {
    reference = Engine::load(reference_dir, reference_options);
  } catch (const Error& e) {
    throw Error("--reference " + reference_dir + ": " + e.what());
  }
  const ModelInfo &mine = engine.info(), &theirs = reference->info();
  if (mine.vocab_size != theirs.vocab_size || mine.hidden_size != theirs.hidden_size ||
      mine.image_tokens != theirs.image_tokens)
    throw Error("--reference " + reference_dir + " is not the same model shape as " + mine.path + " (vocabulary " +
                std::to_string(theirs.vocab_size) + " vs " + std::to_string(mine.vocab_size) + ", hidden " +
                std::to_string(theirs.hidden_size) + " vs " + std::to_string(mine.hidden_size) + ")");

  GenerateOptions greedy;
  greedy.max_tokens = max_tokens;
  greedy.keep_logits = true;
  const Generation expected = answer(*reference, prompt, raw, image, greedy);
  Accuracy result;
  result.reference = theirs.path;
  result.steps = int(expected.token_ids.size());
  if (result.steps > 0) {
    GenerateOptions teacher_forced = greedy;
    teacher_forced.forced_tokens = expected.token_ids;
    const Generation actual = answer(engine, prompt, raw, image, teacher_forced);
    if (actual.step_logits.size() != expected.step_logits.size())
      throw Error("internal: teacher forcing ran " + std::to_string(actual.step_logits.size()) + " steps, not " +
                  std::to_string(expected.step_logits.size()));
    double error_sum = 0;
    for (int step = 0; step < result.steps; ++step) {
      const std::vector<float>& logits = actual.step_logits[step];
      const std::vector<float>& reference_logits = expected.step_logits[step];
      if (logits.size() != reference_logits.size())
        throw Error("--reference " + reference_dir + " generates from " + std::to_string(reference_logits.size()) +
                    " token ids, " + mine.path + " from " + std::to_string(logits.size()) + ": not the same tokenizer");
      const double error = relative_rms_error(logits, reference_logits);
      if (step == 0) result.last_position_logit_rel_rms = error;
      error_sum += error;
      result.logit_rel_rms_max = std::max(result.logit_rel_rms_max, error);
      result.top1_agreement += argmax(logits) == argmax(reference_logits);
    }
    result.logit_rel_rms_mean = error_sum / result.steps;
  }
  const auto& own_tokens = free_running.token_ids;
  while (result.greedy_prefix < std::min(result.steps, int(own_tokens.size())) &&
         own_tokens[result.greedy_prefix] == expected.token_ids[result.greedy_prefix])
    ++result.greedy_prefix;
  if (image) result.image_embeds_rel_err = max_relative_error(engine.embed_image(*image), reference->embed_image(*image));
  return result;
}

nlohmann::json accuracy_json(const Accuracy& a) {
  return {{"reference", a.reference},
          {"steps", a.steps},
          {"logit_rel_rms_mean", a.logit_rel_rms_mean},
          {"logit_rel_rms_max", a.logit_rel_rms_max},
          {"last_position_logit_rel_rms", a.last_position_logit_rel_rms},
          {"top1_agreement", a.top1_agreement},
          {"greedy_prefix", a.greedy_prefix},
          {"image_embeds_rel_err", a.image_embeds_rel_err ? nlohmann::json(*a.image_embeds_rel_err) : nlohmann::json()}};
}

void print_accuracy(const Accuracy& a) {
  std::printf("accuracy vs f32 (%s), %d greedy steps of the reference\n", a.reference.c_str(), a.steps);
  std::printf("  %-22s mean %.3e, max %.3e (teacher-forced, rms(diff) / rms(f32))\n", "logit error",
              a.logit_rel_rms_mean, a.logit_rel_rms_max);
  std::printf("  %-22s %.3e (the prompt's last position)\n", "last-position logits", a.last_position_logit_rel_rms);
  std::printf("  %-22s %d/%d steps\n", "top-1 agreement", a.top1_agreement, a.steps);
  std::printf("  %-22s %d/%d tokens\n", "greedy prefix", a.greedy_prefix, a.steps);
  if (a.image_embeds_rel_err)
    std::printf("  %-22s %.3e (max|diff| / max|f32|)\n", "image embeds error", *a.image_embeds_rel_err);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    GenerateOptions generate;
    std::string image, prompt = "Describe the image.";
    int reps = 5;
    bool json = false, raw = false;
    std::string reference;  // empty: the model itself at f32 when it is dense and benched below f32
    bool no_accuracy = false;
    double read_bandwidth = 0;  // GB/s the decode bandwidth is compared with (bench_peak's BM_ReadBandwidth)
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
  command->add_flag("--raw", flags->raw, "Send the prompt as it is, without the chat template");
  command->add_flag("--json", flags->json, "Print one JSON object");
  auto* reference = command->add_option(
      "--reference", flags->reference,
      "Model directory to compare against at f32: logit error, top-1 agreement and greedy prefix over the -n "
      "tokens (default: the model itself when it is dense and --dtype is not f32)");
  command->add_flag("--no-accuracy", flags->no_accuracy, "Skip the accuracy comparison")->excludes(reference);
  command->add_option("--read-bandwidth", flags->read_bandwidth,
                      "This machine's read bandwidth in GB/s at the bench's thread count (bench_peak's "
                      "BM_ReadBandwidth): decode bandwidth is also given as a fraction of it")
      ->check(CLI::PositiveNumber);
  command->callback([flags] {
    if (!flags->reference.empty()) check_reference(flags->reference);
    // Every repetition must run the vision tower, so the embedding cache is off.
    flags->model.engine.image_cache_entries = 0;
    auto engine = flags->model.load();
    ImageInput image = ImageInput::file(flags->image);
    const ImageInput* image_input = flags->image.empty() ? nullptr : &image;
    std::map<std::string, std::vector<double>> samples;
    int prompt_tokens = 0, generated = 0;
    Generation g;
    for (int rep = 0; rep < flags->reps; ++rep) {
      g = answer(*engine, flags->prompt, flags->raw, image_input, flags->generate);
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
    // Decode streams the LLM's weights once per token: their bytes over the time per token.
    const double decode_ms = timings["decode_ms_per_token"].get<double>();
    const double decode_gbps = decode_ms > 0 ? 1e-6 * double(info.decode_weight_bytes) / decode_ms : 0;
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
                          {"precision", info.precision},
                          {"decode_weight_bytes", info.decode_weight_bytes},
                          {"decode_gbps", decode_gbps},
                          {"peak_rss_mb", peak_rss_mb()}};
    if (flags->read_bandwidth > 0) {
      out["read_bandwidth_gbps"] = flags->read_bandwidth;
      out["decode_bandwidth_fraction"] = decode_gbps / flags->read_bandwidth;
    }

    std::string reference_dir = flags->reference;
    if (reference_dir.empty() && !flags->no_accuracy && info.quantization.empty() &&
        flags->model.engine.precision != Precision::F32)
      reference_dir = info.path;
    std::optional<Accuracy> accuracy;
    if (!reference_dir.empty()) {
      if (!flags->json) std::fprintf(stderr, "comparing with %s at f32...\n", reference_dir.c_str());
      accuracy = measure_accuracy(*engine, reference_dir, flags->prompt, flags->raw, image_input, flags->generate.max_tokens, g);
      out["accuracy"] = accuracy_json(*accuracy);
    }
    if (flags->json) {
      std::printf("%s\n", out.dump().c_str());
      return;
    }
    std::printf("model %s, %d prompt positions, %d generated, %d reps (median [min - max])\n", info.path.c_str(),
                prompt_tokens, generated, flags->reps);
    std::printf("  %-22s %s\n", "precision", info.precision.c_str());
    std::printf("  %-22s %10.1f ms\n", "load", engine->load_ms());
    for (const auto& [key, values] : samples) {
      Stats s = summarize(values);
      std::printf("  %-22s %10.2f ms   [%.2f - %.2f]\n", key.c_str(), s.median, s.min, s.max);
    }
    std::printf("  %-22s %10.1f GFLOP/s\n", "vision", vision_gflops);
    std::printf("  %-22s %10.1f GFLOP/s\n", "prefill", prefill_gflops);
    std::printf("  %-22s %10.1f GB/s     (%.1f MB of weights per token", "decode", decode_gbps,
                1e-6 * double(info.decode_weight_bytes));
    if (flags->read_bandwidth > 0)
      std::printf("; %.0f%% of %.1f GB/s read bandwidth", 100 * decode_gbps / flags->read_bandwidth,
                  flags->read_bandwidth);
    std::printf(")\n");
    std::printf("  %-22s %10.1f MiB\n", "peak RSS", out["peak_rss_mb"].get<double>());
    if (accuracy) print_accuracy(*accuracy);
  });
}

}  // namespace fastvlm::cli
