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

double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return double(now.tv_sec) + 1e-9 * double(now.tv_nsec);
}

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
      (precision == Precision::Int8 && !kernels::int8_compute_available())) {
    state.SkipWithError("this CPU lacks the precision's kernels");
    return;
  }
  const auto checkpoint = Checkpoint::open(model);
  const VisionConfig config = load_fastvlm_config(model).vision;
  const auto tower = VisionTower::load(*checkpoint, config, precision);
  Tensor pixels({1, 3, side, side});
  for (int64_t i = 0; i < pixels.numel(); ++i) pixels.data()[i] = float((i * 2654435761u) % 1000) / 500.0f - 1.0f;
  tower->encode(pixels);  // buffers and oneDNN primitives are created on the first encode

  std::map<std::string, double> seconds_by_kind;
  double module_start = 0;
  int64_t previous_channels = 0;
  const auto observer = [&](const std::string& name, const Tensor& x) {
    const double now = process_cpu_seconds();
    const int64_t channels = x.dim(-1);
    seconds_by_kind[module_kind(name, previous_channels, channels)] += now - module_start;
    previous_channels = channels;
    module_start = now;
  };
  for (auto _ : state) {
    module_start = process_cpu_seconds();
    previous_channels = 0;
    benchmark::DoNotOptimize(tower->encode(pixels, observer));
  }
  const double iterations = double(state.iterations());
  state.counters["TOP/s"] = benchmark::Counter(2.0 * double(vision_macs(config, int(side))),
                                               benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  for (const auto& [kind, seconds] : seconds_by_kind) state.counters[kind + "_ms"] = 1e3 * seconds / iterations;
}
BENCHMARK(BM_VisionTower)
    ->Args({1, 1024})->Args({2, 1024})->Args({3, 1024})->Args({1, 512})
    ->ArgNames({"precision", "side"})
    ->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace fastvlm

BENCHMARK_MAIN();
