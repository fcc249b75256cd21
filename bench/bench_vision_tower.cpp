// The whole FastViTHD tower of a real-sized checkpoint (workload W: bench/workload_w.sh makes one), one
// encode per iteration at each compute precision, timed in process CPU time so that the figures hold on a
// busy machine. Counters: the tower's TOP/s (2 ops per multiply-accumulate, vision_macs) and, per module
// kind, its share of the encode's CPU time (from the encode observer, which fires after every module).
//   FASTVLM_BENCH_MODEL=/tmp/fastvlm-bench/fastvlm-0.5b-q8 OMP_NUM_THREADS=2 build/bin/bench_vision_tower
// Without FASTVLM_BENCH_MODEL the benchmarks are skipped.
#include <benchmark/benchmark.h>

#include <time.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "core/error.h"
#include "io/checkpoint.h"
#include "kernels/capabilities.h"
#include "models/fastvlm/fastvlm_config.h"
#include "vision/fastvit.h"

namespace fastvlm {
namespace {

double seconds_on(clockid_t clock) {
  timespec now{};
  clock_gettime(clock, &now);
  return double(now.tv_sec) + 1e-9 * double(now.tv_nsec);
}
double process_cpu_seconds() { return seconds_on(CLOCK_PROCESS_CPUTIME_ID); }
double wall_seconds() { return seconds_on(CLOCK_MONOTONIC); }

// "vision.network.7" -> the kind of module network_[7] is, from the tensor it produced.
std::string module_kind(const std::string& name, int64_t previous_channels, int64_t channels) {
  if (name == "vision.patch_embed") return "stem";
  if (name.rfind("vision.network.", 0) != 0) return name.substr(std::string("vision.").size());
  if (channels != previous_channels) return "patch_embed";
  return "stage_c" + std::to_string(channels);
}

// args: precision (1 f32, 2 bf16, 3 int8), image side
void BM_VisionTower(benchmark::State& state) {
  const char* model = std::getenv("FASTVLM_BENCH_MODEL");
  if (!model) {
    state.SkipWithError("set FASTVLM_BENCH_MODEL to a FastVLM checkpoint directory");
    return;
  }
  const auto precision = Precision(state.range(0));
  const int64_t side = state.range(1);
  if ((precision == Precision::Bf16 && !kernels::bf16_compute_available()) ||
      (precision == Precision::Int8 && !kernels::vision_int8_available())) {
    state.SkipWithError("this CPU lacks the precision's kernels");
    return;
  }
  const auto checkpoint = Checkpoint::open(model);
  const VisionConfig config = load_fastvlm_config(model).vision;
  const auto tower = VisionTower::load(*checkpoint, config, precision);
  Tensor pixels({1, 3, side, side});
  for (int64_t i = 0; i < pixels.numel(); ++i) pixels.data()[i] = float((i * 2654435761u) % 1000) / 500.0f - 1.0f;
  tower->encode(pixels);  // buffers and oneDNN primitives are created on the first encode

  // CPU time per kind, and wall time: their ratio shows how well a kind uses its threads (with more than
  // one, OpenMP's spinning at barriers counts as CPU time, so CPU time alone hides serial parts).
  std::map<std::string, double> seconds_by_kind, wall_by_kind;
  double module_start = 0, module_wall_start = 0;
  int64_t previous_channels = 0;
  const auto observer = [&](const std::string& name, const Tensor& x) {
    const double now = process_cpu_seconds(), wall_now = wall_seconds();
    const int64_t channels = x.dim(-1);
    const std::string kind = module_kind(name, previous_channels, channels);
    seconds_by_kind[kind] += now - module_start;
    wall_by_kind[kind] += wall_now - module_wall_start;
    previous_channels = channels;
    module_start = now;
    module_wall_start = wall_now;
  };
  for (auto _ : state) {
    module_start = process_cpu_seconds();
    module_wall_start = wall_seconds();
    previous_channels = 0;
    benchmark::DoNotOptimize(tower->encode(pixels, observer));
  }
  const double iterations = double(state.iterations());
  state.counters["TOP/s"] = benchmark::Counter(2.0 * double(vision_macs(config, int(side))),
                                               benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  for (const auto& [kind, seconds] : seconds_by_kind) state.counters[kind + "_ms"] = 1e3 * seconds / iterations;
  for (const auto& [kind, seconds] : wall_by_kind) state.counters[kind + "_wall_ms"] = 1e3 * seconds / iterations;
}
BENCHMARK(BM_VisionTower)
    ->Args({1, 1024})->Args({2, 1024})->Args({3, 1024})->Args({1, 512})
    ->ArgNames({"precision", "side"})
    ->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace fastvlm

BENCHMARK_MAIN();
