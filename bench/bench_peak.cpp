// This machine's compute peaks per core, the ceilings the kernel benchmarks are read against: the
// throughput of one instruction kind issued back to back into independent accumulators, as GFLOP/s (2 per
// multiply-accumulate; int8 "ops" the same way). On AVX-512 CPUs: vpdpbusd is the int8 GEMM's instruction
// (64 MACs), vdpbf16ps the bf16 GEMM's (32 MACs), vfmadd231ps the float32 kernels' (16 MACs); on AMX CPUs
// also the tile instructions oneDNN uses there. On every AVX2 CPU (the only rows that run where AVX-512 is
// absent): vfmadd231ps on ymm (8 MACs), the peak of the AVX2 float kernels (oneDNN's avx2 GEMMs, our AVX2
// convolutions), and avx2_maddubs_int8, the three-instruction int8 dot product of an int8 GEMM without VNNI
// (vpmaddubsw u8 x s8 pairs into s16, vpmaddwd with ones into s32, vpaddd into the sum: 32 MACs per
// triple), and avx2_maddwd_int16, the pair of the vision tower's exact int8 GEMM on AVX2 (vpmaddwd on codes
// widened to int16, 16 MACs, then vpaddd; kernels/avx2_int8_gemm.h). Each row reports an error only where its instructions are missing. Run single-threaded (the
// figures are per core) on an idle machine: kernels bound by these instructions cannot beat them.
//
// And the memory ceiling of decode: BM_ReadBandwidth/threads:T sums a buffer four times the last-level
// cache (STREAM's read kernel, no writes; zmm loads, ymm loads where AVX-512 is absent), on one thread and
// on all of them, in GB/s. A decode step streams the LLM's weights once, so `fastvlm bench
// --read-bandwidth <all-threads figure>` reads its decode GB/s against it.
//   build/bin/bench_peak [--benchmark_filter=ReadBandwidth]
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "core/cpu.h"
#include "kernels/amx_tiles.h"
#include "kernels/target.h"

// GCC 12's AVX-512 headers build unmasked results from undefined vectors; the lanes are all written.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastvlm {
namespace {

constexpr int64_t kRoundsPerIteration = 4096;

// The AVX-512 instructions, then the AVX2 ones (the Avx2 kernel level's, on ymm registers).
enum class Instruction { DotInt8, DotBf16, FmaF32, Avx2FmaF32, Avx2MaddubsInt8, Avx2MaddwdInt16 };

constexpr bool is_avx2(Instruction kind) {
  return kind == Instruction::Avx2FmaF32 || kind == Instruction::Avx2MaddubsInt8 || kind == Instruction::Avx2MaddwdInt16;
}

// Enough independent accumulators to cover the instructions' latency on current cores. The AVX2 int8
// triple's products do not depend on the sums (only its 1-cycle vpaddd does), so 6 cover it; with 8 or
// more, GCC 12 has too few ymm registers left for the products and keeps sums on the stack, and the
// store-to-load round trips cost a quarter of the rate on Zen 3.
constexpr int accumulators(Instruction kind) {
  return kind == Instruction::Avx2MaddubsInt8 ? 6 : kind == Instruction::Avx2MaddwdInt16 ? 8 : 12;
}

// Per instruction; per vpmaddubsw + vpmaddwd + vpaddd triple for Avx2MaddubsInt8, per vpmaddwd + vpaddd
// pair for Avx2MaddwdInt16.
constexpr double macs_per_instruction(Instruction kind) {
  switch (kind) {
    case Instruction::DotInt8: return 64;
    case Instruction::DotBf16: return 32;
    case Instruction::FmaF32: return 16;
    case Instruction::Avx2FmaF32: return 8;
    case Instruction::Avx2MaddubsInt8: return 32;
    case Instruction::Avx2MaddwdInt16: return 16;
  }
  return 0;
}

template <Instruction Kind>
__attribute__((target("avx512f,avx512bw,avx512vnni,avx512bf16"), noinline)) void issue(int64_t rounds, float* sink) {
  constexpr int kAccumulators = accumulators(Kind);
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

// The int8 triple multiplies a broadcast group of 4 activations by a different weight vector per
// accumulator, as a GEMM's inner loop does: the activations change every round, so that the compiler can
// hoist no product out of the loop, and each sum depends on its own vpaddd only.
template <Instruction Kind>
FASTVLM_TARGET_AVX2 __attribute__((noinline)) void issue_avx2(int64_t rounds, float* sink) {
  constexpr int kAccumulators = accumulators(Kind);
  alignas(32) int8_t weights[kAccumulators][32];
  for (int i = 0; i < kAccumulators; ++i)
    for (int j = 0; j < 32; ++j) weights[i][j] = int8_t(i + j - 16);
  __m256i integer[kAccumulators];
  __m256 real[kAccumulators];
  for (int i = 0; i < kAccumulators; ++i) {
    integer[i] = _mm256_set1_epi32(i);
    real[i] = _mm256_set1_ps(float(i));
  }
  const __m256i ones = _mm256_set1_epi16(1), next_activations = _mm256_set1_epi8(1);
  __m256i activations = _mm256_set1_epi32(0x01020304);
  const __m256 x = _mm256_set1_ps(1.0001f), y = _mm256_set1_ps(0.9999f);
  for (int64_t round = 0; round < rounds; ++round) {
#pragma GCC unroll 12
    for (int i = 0; i < kAccumulators; ++i) {
      if constexpr (Kind == Instruction::Avx2FmaF32) real[i] = _mm256_fmadd_ps(real[i], x, y);
      if constexpr (Kind == Instruction::Avx2MaddubsInt8) {
        const __m256i weight = _mm256_load_si256(reinterpret_cast<const __m256i*>(weights[i]));
        const __m256i pair_sums = _mm256_maddubs_epi16(activations, weight);
        integer[i] = _mm256_add_epi32(integer[i], _mm256_madd_epi16(pair_sums, ones));
      }
    }
    if constexpr (Kind == Instruction::Avx2MaddubsInt8) activations = _mm256_add_epi8(activations, next_activations);
  }
  __m256i integer_total = integer[0];
  __m256 real_total = real[0];
  for (int i = 1; i < kAccumulators; ++i) {
    integer_total = _mm256_add_epi32(integer_total, integer[i]);
    real_total = _mm256_add_ps(real_total, real[i]);
  }
  alignas(32) int32_t integer_lanes[8];
  alignas(32) float real_lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(integer_lanes), integer_total);
  _mm256_store_ps(real_lanes, real_total);
  float total = 0;
  for (int lane = 0; lane < 8; ++lane) total += float(integer_lanes[lane]) + real_lanes[lane];
  *sink = total;
}

// vpmaddwd + vpaddd pairs into 8 independent sums, in assembly: from intrinsics GCC 12 copies the sums
// between registers every round or keeps some on the stack (68-115 G op/s on Zen 3, against ~150 here and
// in the GEMM's own assembly kernel), which would understate the ceiling. Each sum depends on its own
// vpaddd only, as in the GEMM; the operands stay in registers (the GEMM's loads have ports of their own).
FASTVLM_TARGET_AVX2 __attribute__((noinline)) void issue_maddwd_pairs(int64_t rounds, float* sink) {
  alignas(32) int32_t lanes[8];
#define FASTVLM_PEAK_PAIR(product, sum) \
  "vpmaddwd %%ymm14, %%ymm15, %%ymm" #product "\n\t vpaddd %%ymm" #product ", %%ymm" #sum ", %%ymm" #sum "\n\t"
  asm volatile(
      "vpxor %%xmm0, %%xmm0, %%xmm0\n\t vpxor %%xmm1, %%xmm1, %%xmm1\n\t vpxor %%xmm2, %%xmm2, %%xmm2\n\t"
      "vpxor %%xmm3, %%xmm3, %%xmm3\n\t vpxor %%xmm4, %%xmm4, %%xmm4\n\t vpxor %%xmm5, %%xmm5, %%xmm5\n\t"
      "vpxor %%xmm6, %%xmm6, %%xmm6\n\t vpxor %%xmm7, %%xmm7, %%xmm7\n\t"
      "vpcmpeqd %%ymm14, %%ymm14, %%ymm14\n\t vpabsw %%ymm14, %%ymm15\n"
      "1:\n\t"
      FASTVLM_PEAK_PAIR(8, 0) FASTVLM_PEAK_PAIR(9, 1) FASTVLM_PEAK_PAIR(10, 2) FASTVLM_PEAK_PAIR(11, 3)
      FASTVLM_PEAK_PAIR(12, 4) FASTVLM_PEAK_PAIR(13, 5) FASTVLM_PEAK_PAIR(8, 6) FASTVLM_PEAK_PAIR(9, 7)
      "dec %[rounds]\n\t"
      "jnz 1b\n\t"
      "vpaddd %%ymm1, %%ymm0, %%ymm0\n\t vpaddd %%ymm3, %%ymm2, %%ymm2\n\t vpaddd %%ymm5, %%ymm4, %%ymm4\n\t"
      "vpaddd %%ymm7, %%ymm6, %%ymm6\n\t vpaddd %%ymm2, %%ymm0, %%ymm0\n\t vpaddd %%ymm6, %%ymm4, %%ymm4\n\t"
      "vpaddd %%ymm4, %%ymm0, %%ymm0\n\t"
      "vmovdqa %%ymm0, %[lanes]\n\t"
      "vzeroupper"
      : [rounds] "+r"(rounds), [lanes] "=m"(lanes)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
        "xmm13", "xmm14", "xmm15", "cc");
#undef FASTVLM_PEAK_PAIR
  *sink = float(lanes[0]);
}

template <Instruction Kind>
void BM_Peak(benchmark::State& state) {
  const CpuFeatures& features = cpu_features();
  if constexpr (is_avx2(Kind)) {
    if (active_isa() < Isa::Avx2) {
      state.SkipWithError("needs AVX2 with FMA");
      return;
    }
  } else if (!features.avx512_vnni || active_isa() < Isa::Avx512) {
    state.SkipWithError("needs AVX-512 with BF16 and VNNI");
    return;
  }
  float sink = 0;
  for (auto _ : state) {
    if constexpr (Kind == Instruction::Avx2MaddwdInt16)
      issue_maddwd_pairs(kRoundsPerIteration, &sink);
    else if constexpr (is_avx2(Kind))
      issue_avx2<Kind>(kRoundsPerIteration, &sink);
    else
      issue<Kind>(kRoundsPerIteration, &sink);
    benchmark::DoNotOptimize(sink);
  }
  const double flops = 2.0 * macs_per_instruction(Kind) * accumulators(Kind) * kRoundsPerIteration;
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
__attribute__((target("avx512f"), noinline)) int64_t sum_lines_avx512(const int64_t* data, size_t count) {
  __m512i sums[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
  size_t line = 0;
  for (; line + 4 <= count; line += 4)
    for (int i = 0; i < 4; ++i) sums[i] = _mm512_add_epi64(sums[i], _mm512_load_si512(data + (line + i) * 8));
  for (; line < count; ++line) sums[0] = _mm512_add_epi64(sums[0], _mm512_load_si512(data + line * 8));
  return _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(sums[0], sums[1]), _mm512_add_epi64(sums[2], sums[3])));
}

// The same sum in ymm loads, two per line, for CPUs without AVX-512.
FASTVLM_TARGET_AVX2 __attribute__((noinline)) int64_t sum_lines_avx2(const int64_t* data, size_t count) {
  const __m256i* vectors = reinterpret_cast<const __m256i*>(data);
  const size_t vector_count = 2 * count;
  __m256i sums[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
  size_t vector = 0;
  for (; vector + 4 <= vector_count; vector += 4)
    for (int i = 0; i < 4; ++i) sums[i] = _mm256_add_epi64(sums[i], _mm256_load_si256(vectors + vector + i));
  for (; vector < vector_count; ++vector) sums[0] = _mm256_add_epi64(sums[0], _mm256_load_si256(vectors + vector));
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(sums[0], sums[1]), _mm256_add_epi64(sums[2], sums[3])));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

// Four times the last-level cache (at least 1 GiB where the OS does not say), so that every pass reads DRAM.
size_t bandwidth_buffer_bytes() {
  const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return std::max<size_t>(size_t(1) << 30, 4 * size_t(std::max(llc, 0L)));
}

void BM_ReadBandwidth(benchmark::State& state) {
  if (active_isa() < Isa::Avx2) {
    state.SkipWithError("needs AVX2");
    return;
  }
  const auto sum_lines = active_isa() >= Isa::Avx512 ? sum_lines_avx512 : sum_lines_avx2;
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
BENCHMARK(BM_Peak<Instruction::Avx2FmaF32>)->Name("BM_Peak/avx2_vfmadd231ps_f32");
BENCHMARK(BM_Peak<Instruction::Avx2MaddubsInt8>)->Name("BM_Peak/avx2_maddubs_int8");
BENCHMARK(BM_Peak<Instruction::Avx2MaddwdInt16>)->Name("BM_Peak/avx2_maddwd_int16");
BENCHMARK(BM_TilePeak<TileInstruction::DotBf16>)->Name("BM_Peak/amx_tdpbf16ps_bf16");
BENCHMARK(BM_TilePeak<TileInstruction::DotInt8>)->Name("BM_Peak/amx_tdpbusd_int8");

}  // namespace
}  // namespace fastvlm

BENCHMARK_MAIN();
