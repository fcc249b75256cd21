// This machine's compute peaks per core, the ceilings the kernel benchmarks are read against: the
// throughput of one AVX-512 instruction kind issued back to back into independent accumulators, as
// GFLOP/s (2 per multiply-accumulate; int8 "ops" the same way). vpdpbusd is the int8 GEMM's instruction
// (64 MACs), vdpbf16ps the bf16 GEMM's (32 MACs), vfmadd231ps the float32 kernels' (16 MACs); on AMX CPUs
// also the tile instructions oneDNN uses there. Run single-threaded (the figures are per core) on an idle
// machine: kernels bound by these instructions cannot beat them.
//
// And the memory ceiling of decode: BM_ReadBandwidth/threads:T sums a buffer four times the last-level
// cache (STREAM's read kernel, no writes), on one thread and on all of them, in GB/s. A decode step
// streams the LLM's weights once, so `fastvlm bench --read-bandwidth <all-threads figure>` reads its
// decode GB/s against it.
//   build/bin/bench_peak [--benchmark_filter=ReadBandwidth]
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "core/cpu.h"
#include "kernels/amx_tiles.h"

// GCC 12's AVX-512 headers build unmasked results from undefined vectors; the lanes are all written.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastvlm {
namespace {

// Enough independent accumulators to cover the instructions' latency on current cores.
constexpr int kAccumulators = 12;
constexpr int64_t kRoundsPerIteration = 4096;

enum class Instruction { DotInt8, DotBf16, FmaF32 };

constexpr double macs_per_instruction(Instruction kind) {
  return kind == Instruction::DotInt8 ? 64 : kind == Instruction::DotBf16 ? 32 : 16;
}

template <Instruction Kind>
__attribute__((target("avx512f,avx512bw,avx512vnni,avx512bf16"), noinline)) void issue(int64_t rounds, float* sink) {
  __m512i integer[kAccumulators];
  __m512 real[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) {
    integer[i] = _mm512_set1_epi32(i);
    real[i] = _mm512_set1_ps(float(i));
  }
  const __m512i a = _mm512_set1_epi32(0x01020304), b = _mm512_set1_epi32(0x01010101);
  const __m512 x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
  for (int64_t round = 0; round < rounds; ++round) {
#pragma GCC unroll 12
    for (int i = 0; i < kAccumulators; ++i) {
      if constexpr (Kind == Instruction::DotInt8) integer[i] = _mm512_dpbusd_epi32(integer[i], a, b);
      if constexpr (Kind == Instruction::DotBf16) real[i] = _mm512_dpbf16_ps(real[i], (__m512bh)a, (__m512bh)b);
      if constexpr (Kind == Instruction::FmaF32) real[i] = _mm512_fmadd_ps(real[i], x, y);
    }
  }
  float total = 0;
  for (int i = 0; i < kAccumulators; ++i)
    total += float(_mm512_reduce_add_epi32(integer[i])) + _mm512_reduce_add_ps(real[i]);
  *sink = total;
}

template <Instruction Kind>
void BM_Peak(benchmark::State& state) {
  const CpuFeatures& features = cpu_features();
  if (!features.avx512_vnni || active_isa() < Isa::Avx512) {
    state.SkipWithError("needs AVX-512 with BF16 and VNNI");
    return;
  }
  float sink = 0;
  for (auto _ : state) {
    issue<Kind>(kRoundsPerIteration, &sink);
    benchmark::DoNotOptimize(sink);
  }
  const double flops = 2.0 * macs_per_instruction(Kind) * kAccumulators * kRoundsPerIteration;
  state.counters["GFLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
// AMX: one tile instruction multiplies a 16 x K tile by a K x 16 tile into 16 x 16 float32 / int32 sums
// (K = 32 bf16 or 64 int8: 8192 or 16384 MACs), what oneDNN's bf16 and int8 GEMMs issue on AMX CPUs. Four
// accumulator tiles (0-3) over two A tiles (4, 5) and two B tiles (6, 7) keep the unit busy.
enum class TileInstruction { DotBf16, DotInt8 };

template <TileInstruction Kind>
__attribute__((target("amx-tile,amx-bf16,amx-int8"), noinline)) void issue_tiles(int64_t rounds, float* sink) {
  kernels::TileConfig config;
  for (int t = 0; t < 8; ++t) config.shape(t, 16, 64);
  alignas(64) static uint8_t operands[16 * 64];
  alignas(64) static int32_t sums[16 * 16];
  for (size_t i = 0; i < sizeof operands; ++i) operands[i] = uint8_t(i % 3);
  kernels::load_tile_config(config);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, operands, 64);
  _tile_loadd(5, operands, 64);
  _tile_loadd(6, operands, 64);
  _tile_loadd(7, operands, 64);
  for (int64_t round = 0; round < rounds; ++round) {
    if constexpr (Kind == TileInstruction::DotBf16) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    } else {
      _tile_dpbusd(0, 4, 6);
      _tile_dpbusd(1, 4, 7);
      _tile_dpbusd(2, 5, 6);
      _tile_dpbusd(3, 5, 7);
    }
  }
  _tile_stored(0, sums, 64);
  _tile_release();
  *sink = float(sums[0]);
}

template <TileInstruction Kind>
void BM_TilePeak(benchmark::State& state) {
  if (active_isa() < Isa::Amx) {
    state.SkipWithError("needs AMX (tiles, bf16, int8) with the OS permission");
    return;
  }
  float sink = 0;
  constexpr int64_t kTileRounds = 1024;
  for (auto _ : state) {
    issue_tiles<Kind>(kTileRounds, &sink);
    benchmark::DoNotOptimize(sink);
  }
  const double macs = Kind == TileInstruction::DotBf16 ? 16.0 * 16 * 32 : 16.0 * 16 * 64;
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * macs * 4 * kTileRounds,
                                                 benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}

// Sum of `count` 64-byte lines from `data`: four independent accumulators keep enough loads in flight.
__attribute__((target("avx512f"), noinline)) int64_t sum_lines(const int64_t* data, size_t count) {
  __m512i sums[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
  size_t line = 0;
  for (; line + 4 <= count; line += 4)
    for (int i = 0; i < 4; ++i) sums[i] = _mm512_add_epi64(sums[i], _mm512_load_si512(data + (line + i) * 8));
  for (; line < count; ++line) sums[0] = _mm512_add_epi64(sums[0], _mm512_load_si512(data + line * 8));
  return _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(sums[0], sums[1]), _mm512_add_epi64(sums[2], sums[3])));
}

// Four times the last-level cache (at least 1 GiB where the OS does not say), so that every pass reads DRAM.
size_t bandwidth_buffer_bytes() {
  const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return std::max<size_t>(size_t(1) << 30, 4 * size_t(std::max(llc, 0L)));
}

void BM_ReadBandwidth(benchmark::State& state) {
  if (active_isa() < Isa::Avx512) {
    state.SkipWithError("needs AVX-512");
    return;
  }
  const int threads = int(state.range(0));
  const size_t lines = bandwidth_buffer_bytes() / 64;
  // Written once (so that its pages exist), then only read through a 64-byte aligned view.
  std::vector<int64_t> storage(lines * 8 + 8, 1);
  const int64_t* data = reinterpret_cast<const int64_t*>((reinterpret_cast<uintptr_t>(storage.data()) + 63) & ~uintptr_t(63));
  int64_t sink = 0;
  for (auto _ : state) {
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
      const size_t per_thread = (lines + size_t(omp_get_num_threads()) - 1) / size_t(omp_get_num_threads());
      const size_t first = std::min(lines, per_thread * size_t(omp_get_thread_num()));
      sink += sum_lines(data + first * 8, std::min(per_thread, lines - first));
    }
    benchmark::DoNotOptimize(sink);
  }
  state.counters["GB/s"] = benchmark::Counter(double(lines * 64) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// One thread, then all of them (OMP_NUM_THREADS, else one per core).
const auto* const kReadBandwidth = [] {
  auto* b = benchmark::RegisterBenchmark("BM_ReadBandwidth", BM_ReadBandwidth)->ArgName("threads")->Arg(1);
  if (omp_get_max_threads() > 1) b->Arg(omp_get_max_threads());
  return b->UseRealTime()->Unit(benchmark::kMillisecond);
}();
BENCHMARK(BM_Peak<Instruction::DotInt8>)->Name("BM_Peak/vpdpbusd_int8");
BENCHMARK(BM_Peak<Instruction::DotBf16>)->Name("BM_Peak/vdpbf16ps_bf16");
BENCHMARK(BM_Peak<Instruction::FmaF32>)->Name("BM_Peak/vfmadd231ps_f32");
BENCHMARK(BM_TilePeak<TileInstruction::DotBf16>)->Name("BM_Peak/amx_tdpbf16ps_bf16");
BENCHMARK(BM_TilePeak<TileInstruction::DotInt8>)->Name("BM_Peak/amx_tdpbusd_int8");

}  // namespace
}  // namespace fastvlm

BENCHMARK_MAIN();
