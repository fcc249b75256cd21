// Microbenchmarks of the vision tower's hot kernels at FastViTHD's 1024x1024 shapes: the depthwise 7x7
// convolutions (float32, this CPU's kernel level) and the ConvFFN / attention 1x1 GEMMs (bf16 on oneDNN,
// with the epilogues the tower uses, float32 for comparison, and the Int8 compute's s8 products). Counters report GFLOP/s (2 flops per
// multiply-accumulate); this machine kind measured AVX-512 fp32 FMA peak ~350 GFLOP/s on 2 cores, and
// oneDNN AMX bf16 0.7-2.2 TFLOP/s on these shapes.
#include <benchmark/benchmark.h>

#include <omp.h>

#include <vector>

#include "core/cpu.h"
#include "core/gemm.h"
#include "core/tensor.h"
#include "vision/conv_kernels.h"
#include "vision/fastvit.h"

namespace fastvlm {
namespace {

void fill(float* data, int64_t n) {
  for (int64_t i = 0; i < n; ++i) data[i] = float((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
}

GroupedConv depthwise(int channels, int kernel) {
  GroupedConv conv;
  conv.in_channels = conv.out_channels = conv.groups = channels;
  conv.kernel = kernel;
  conv.weight = Tensor({int64_t(kernel) * kernel, 1, channels});
  conv.bias = Tensor({channels});
  fill(conv.weight.data(), conv.weight.numel());
  fill(conv.bias.data(), conv.bias.numel());
  return conv;
}

// args: side, channels, kernel
void BM_DepthwiseConv(benchmark::State& state) {
  const int64_t side = state.range(0);
  const int channels = int(state.range(1)), kernel = int(state.range(2));
  const GroupedConv conv = depthwise(channels, kernel);
  Tensor input({side, side, channels}), output({side, side, channels});
  fill(input.data(), input.numel());
  const Isa isa = active_isa();
  for (auto _ : state) {
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < side; ++row)
      conv_rows(conv, input.data(), side, side, output.data() + row * side * channels, row, row + 1, isa);
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * double(side * side * channels) * kernel * kernel;
  state.counters["GFLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.counters["GB/s"] = benchmark::Counter(2.0 * 4 * side * side * channels, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
  state.SetLabel(std::string(isa_name(isa)) + ", " + std::to_string(omp_get_max_threads()) + " threads");
}
BENCHMARK(BM_DepthwiseConv)->Args({64, 384, 7})->Args({256, 96, 7})->Args({128, 192, 7})->Args({64, 384, 3})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// args: M, K, N, bf16 (0/1), epilogue (0 none, 1 gelu, 2 add to output)
void BM_PointwiseGemm(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const bool bf16 = state.range(3) != 0;
  const auto epilogue = Epilogue(state.range(4));
  if (bf16 && active_isa() < Isa::Avx512) {
    state.SkipWithError("no AVX512-BF16");
    return;
  }
  std::vector<float> a(static_cast<size_t>(M * K)), b(static_cast<size_t>(N * K)), bias(static_cast<size_t>(N)),
      c(static_cast<size_t>(M * N));
  fill(a.data(), M * K);
  fill(b.data(), N * K);
  fill(bias.data(), N);
  // bf16 operands are the upper halves of the float bit patterns (truncation is fine for timing).
  std::vector<uint16_t> a16(a.size()), b16(b.size()), c16(c.size());
  for (size_t i = 0; i < a.size(); ++i) a16[i] = uint16_t(reinterpret_cast<const uint32_t&>(a[i]) >> 16);
  for (size_t i = 0; i < b.size(); ++i) b16[i] = uint16_t(reinterpret_cast<const uint32_t&>(b[i]) >> 16);
  // The tower writes a GELU output as the next GEMM's bf16 input, and adds a contraction into float32.
  const bool bf16_output = bf16 && epilogue != Epilogue::AddToOutput;
  const MatmulSpec spec{.M = M, .N = N, .K = K,
                        .ab_type = bf16 ? MatrixType::Bf16 : MatrixType::F32,
                        .a = bf16 ? static_cast<const void*>(a16.data()) : a.data(), .lda = K,
                        .b = bf16 ? static_cast<const void*>(b16.data()) : b.data(), .ldb = K,
                        .b_transposed = true,
                        .c_type = bf16_output ? MatrixType::Bf16 : MatrixType::F32,
                        .c = bf16_output ? static_cast<void*>(c16.data()) : c.data(), .ldc = N,
                        .bias = bias.data(), .epilogue = epilogue};
  for (auto _ : state) {
    matmul(spec);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(M) * K * N, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
  state.SetLabel(std::string(bf16 ? "bf16" : "f32") + ", " + std::to_string(omp_get_max_threads()) + " threads");
}
// Stage 2 ConvFFN (64x64x384 at 1024²): fc1 with GELU, fc2 added to the residual; stage 0 and 1 fc1;
// stage 3 attention qkv (32x32x768).
BENCHMARK(BM_PointwiseGemm)
    ->Args({4096, 384, 1536, 1, 1})->Args({4096, 1536, 384, 1, 2})
    ->Args({4096, 384, 1536, 0, 1})->Args({4096, 1536, 384, 0, 2})
    ->Args({65536, 96, 384, 1, 1})->Args({65536, 384, 96, 1, 2})
    ->Args({16384, 192, 768, 1, 1})->Args({16384, 768, 192, 1, 2})
    ->Args({1024, 768, 2304, 1, 0})->Args({256, 384, 1536, 1, 1})->Args({256, 1536, 384, 1, 2})
    ->Args({128, 384, 1536, 1, 1})->Args({128, 1536, 384, 1, 2})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// The Int8 compute's ConvFFN product: int8 codes, per-channel weight scales, float32 output with the
// tower's epilogues. args: M, K, N, epilogue (1 gelu, 2 add to output). Compare with the bf16 rows above.
void BM_PointwiseGemmInt8(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const auto epilogue = Epilogue(state.range(3));
  if (!cpu_features().avx512_vnni || active_isa() < Isa::Avx512) {
    state.SkipWithError("no AVX512-VNNI");
    return;
  }
  std::vector<int8_t> a(static_cast<size_t>(M * K)), b(static_cast<size_t>(N * K));
  for (size_t i = 0; i < a.size(); ++i) a[i] = int8_t(int((i * 2654435761u) % 255) - 127);
  for (size_t i = 0; i < b.size(); ++i) b[i] = int8_t(int((i * 40503u) % 255) - 127);
  std::vector<float> b_scales(static_cast<size_t>(N), 1e-3f), bias(static_cast<size_t>(N)), c(static_cast<size_t>(M * N));
  fill(bias.data(), N);
  const Int8MatmulSpec spec{.M = M, .N = N, .K = K, .a = a.data(), .lda = K, .a_scale = 1e-2f, .b = b.data(),
                            .ldb = K, .b_scales = b_scales.data(), .c = c.data(), .ldc = N, .bias = bias.data(),
                            .epilogue = epilogue};
  for (auto _ : state) {
    matmul_s8(spec);
    benchmark::ClobberMemory();
  }
  state.counters["GOP/s"] = benchmark::Counter(2.0 * double(M) * K * N, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
  state.SetLabel("s8, " + std::to_string(omp_get_max_threads()) + " threads");
}
// The tower's int8 tiles are 128 pixels; stage 2 and stage 1 ConvFFN, then the whole stage-2 map.
BENCHMARK(BM_PointwiseGemmInt8)
    ->Args({128, 384, 1536, 1})->Args({128, 1536, 384, 2})->Args({128, 192, 768, 1})->Args({128, 768, 192, 2})
    ->Args({4096, 384, 1536, 1})->Args({4096, 1536, 384, 2})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace fastvlm

BENCHMARK_MAIN();
