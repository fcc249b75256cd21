// Microbenchmarks of the vision tower's hot kernels at FastViTHD's 1024x1024 shapes: the spatial
// convolutions (float32, this CPU's kernel level) and the ConvFFN / attention 1x1 GEMMs (bf16 on oneDNN,
// with the epilogues the tower uses, float32 for comparison, and the Int8 compute's s8 products).
// Counters report GFLOP/s (2 flops per multiply-accumulate); read them against bench_peak, this
// machine's per-core instruction peaks (e.g. AMD Zen 5: int8 vpdpbusd 1070, bf16 vdpbf16ps 497, f32 FMA
// 268 GFLOP/s per core; an Intel Xeon with AMX: tdpbusd ~6200, tdpbf16ps ~3200).
#include <benchmark/benchmark.h>

#include <omp.h>

#include <vector>

#include "core/cpu.h"
#include "core/tensor.h"
#include "kernels/amx_int8_gemm.h"
#include "kernels/avx2_int8_gemm.h"
#include "kernels/capabilities.h"
#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "kernels/int8_epilogue.h"
#include "kernels/softmax.h"
#include "nn/linear.h"

namespace fastvlm {
namespace {

void fill(float* data, int64_t n) {
  for (int64_t i = 0; i < n; ++i) data[i] = float((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
}

// A convolution with seeded weights. groups == in_channels makes it depthwise (out_channels ==
// in_channels) or channel-multiplier-2 (out_channels == 2 * in_channels, the PatchEmbed convs).
struct SpatialConv {
  Tensor weight, bias;
  ConvParams params;
};

SpatialConv spatial_conv(int in_channels, int out_channels, int groups, int kernel, int stride) {
  SpatialConv conv{Tensor({int64_t(kernel) * kernel, in_channels / groups, out_channels}), Tensor({out_channels}), {}};
  fill(conv.weight.data(), conv.weight.numel());
  fill(conv.bias.data(), conv.bias.numel());
  conv.params = {.in_channels = in_channels, .out_channels = out_channels, .kernel = kernel, .stride = stride,
                 .groups = groups, .weight = conv.weight.data(), .bias = conv.bias.data()};
  return conv;
}

// The tower's spatial convolutions, threaded over output rows like run_conv.
// args: input side, in channels, out channels, groups, kernel, stride
void BM_DepthwiseConv(benchmark::State& state) {
  const int64_t side = state.range(0);
  const int in_channels = int(state.range(1)), out_channels = int(state.range(2)), groups = int(state.range(3));
  const int kernel = int(state.range(4)), stride = int(state.range(5));
  const SpatialConv conv = spatial_conv(in_channels, out_channels, groups, kernel, stride);
  const int64_t out_side = conv_output_size(conv.params, side);
  Tensor input({side, side, in_channels}), output({out_side, out_side, out_channels});
  fill(input.data(), input.numel());
  for (auto _ : state) {
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < out_side; ++row)
      conv_rows(conv.params, input.data(), side, side, output.data() + row * out_side * out_channels, row, row + 1);
    benchmark::ClobberMemory();
  }
  const double macs = double(out_side * out_side) * out_channels * (in_channels / groups) * kernel * kernel;
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * macs, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.counters["GB/s"] = benchmark::Counter(4.0 * double(input.numel() + output.numel()),
                                              benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.SetLabel(std::string(isa_name(active_isa())) + ", " + std::to_string(omp_get_max_threads()) + " threads");
}
// ConvFFN / RepCPE 7x7 at every stage, RepMixer 3x3, the PatchEmbed 7x7 stride-2 multiplier-2 convs,
// the stem's dense 3x3 stride-2 conv (3 -> 96) and depthwise 3x3 stride-2 conv, and conv_exp.
BENCHMARK(BM_DepthwiseConv)
    ->Args({256, 96, 96, 96, 7, 1})->Args({128, 192, 192, 192, 7, 1})->Args({64, 384, 384, 384, 7, 1})
    ->Args({32, 768, 768, 768, 7, 1})->Args({16, 1536, 1536, 1536, 7, 1})
    ->Args({256, 96, 96, 96, 3, 1})->Args({128, 192, 192, 192, 3, 1})->Args({64, 384, 384, 384, 3, 1})
    ->Args({256, 96, 192, 96, 7, 2})->Args({128, 192, 384, 192, 7, 2})->Args({64, 384, 768, 384, 7, 2})
    ->Args({32, 768, 1536, 768, 7, 2})
    ->Args({1024, 3, 96, 1, 3, 2})->Args({512, 96, 96, 96, 3, 2})
    ->Args({16, 1536, 3072, 1536, 3, 1})
    ->ArgNames({"side", "in", "out", "groups", "k", "s"})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// args: M, K, N, bf16 (0/1), epilogue (0 none, 1 gelu, 2 add to output)
void BM_PointwiseGemm(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const bool bf16 = state.range(3) != 0;
  const auto epilogue = Epilogue(state.range(4));
  if (bf16 && !kernels::bf16_compute_available()) {
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
                        .ab_type = bf16 ? DType::BF16 : DType::F32,
                        .a = bf16 ? static_cast<const void*>(a16.data()) : a.data(), .lda = K,
                        .b = bf16 ? static_cast<const void*>(b16.data()) : b.data(), .ldb = K,
                        .b_transposed = true,
                        .c_type = bf16_output ? DType::BF16 : DType::F32,
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
// the stem's 1x1 conv (256x256x96) with GELU, alone, and into a float32 map; stage 3 attention qkv (32x32x768).
BENCHMARK(BM_PointwiseGemm)
    ->Args({4096, 384, 1536, 1, 1})->Args({4096, 1536, 384, 1, 2})
    ->Args({4096, 384, 1536, 0, 1})->Args({4096, 1536, 384, 0, 2})
    ->Args({65536, 96, 384, 1, 1})->Args({65536, 384, 96, 1, 2})
    ->Args({65536, 96, 96, 1, 1})->Args({65536, 96, 96, 1, 0})->Args({65536, 96, 96, 1, 2})
    ->Args({16384, 192, 768, 1, 1})->Args({16384, 768, 192, 1, 2})
    ->Args({1024, 768, 2304, 1, 0})->Args({256, 384, 1536, 1, 1})->Args({256, 1536, 384, 1, 2})
    ->Args({128, 384, 1536, 1, 1})->Args({128, 1536, 384, 1, 2})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// The f32 compute's ConvFFN and attention products on weights packed at load, as the tower's per-thread
// tiles run them (single threaded: OMP_NUM_THREADS=1; timed in CPU time). args: M, K, N. Compare
// GFLOP/s with bench_peak's f32 FMA rate per core.
void BM_PointwiseGemmF32Packed(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  std::vector<float> a(static_cast<size_t>(M * K)), b(static_cast<size_t>(N * K)), bias(static_cast<size_t>(N)),
      c(static_cast<size_t>(M * N));
  fill(a.data(), M * K);
  fill(b.data(), N * K);
  fill(bias.data(), N);
  const PackedWeights packed(b.data(), N, K);
  const MatmulSpec spec{.M = M, .N = N, .K = K, .a = a.data(), .lda = K, .packed_b = &packed, .c = c.data(),
                        .ldc = N, .bias = bias.data()};
  for (auto _ : state) {
    matmul(spec);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(M) * K * N, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
// ConvFFN fc1/fc2 of stages 0-4 at the tower's tile rows, stage 2 and 3 at other tile rows, attention qkv.
BENCHMARK(BM_PointwiseGemmF32Packed)
    ->Args({512, 96, 384})->Args({512, 384, 96})->Args({256, 192, 768})->Args({256, 768, 192})
    ->Args({128, 384, 1536})->Args({128, 1536, 384})->Args({256, 384, 1536})->Args({256, 1536, 384})
    ->Args({512, 384, 1536})->Args({512, 1536, 384})
    ->Args({128, 768, 3072})->Args({128, 3072, 768})->Args({256, 768, 3072})->Args({256, 3072, 768})
    ->Args({128, 1536, 6144})->Args({128, 6144, 1536})->Args({1024, 768, 2304})
    ->ArgNames({"M", "K", "N"})
    ->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

// The Int8 compute's ConvFFN and attention products: int8 codes multiplied exactly into int32 on weights
// packed at load, then the tower's epilogue (0: none, the product alone; 1: dequantise + GELU + requantise
// per pixel; 2: dequantise + add to a float32 output). kernel 0: oneDNN's matmul_s8, the whole int32
// product, then the epilogue over it; 1: amx_s8_gemm, the epilogue on each block of 32 rows as it comes
// (the tower's path where the CPU has AMX-INT8); 2: avx2_s8_gemm, the epilogue per strip of 48 rows (the
// path without AVX512-VNNI). Timed in the calling thread's CPU time, single threaded like the tower's
// per-thread tiles (run with OMP_NUM_THREADS=1). args: M, K, N, epilogue, kernel. Compare GOP/s with
// bench_peak's tdpbusd (AMX), vpdpbusd or (kernel 2) avx2_maddubs_int8 rate per core.
void BM_PointwiseGemmInt8(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const int epilogue = int(state.range(3));
  enum Kernel { kOneDnn, kAmx, kAvx2 } const kernel = Kernel(state.range(4));
  const char* missing = kernel == kAmx    ? (kernels::int8_tiles_available() ? nullptr : "no AMX-INT8")
                        : kernel == kAvx2 ? (kernels::vision_int8_available() ? nullptr : "no AVX2")
                                          : (kernels::int8_compute_available() ? nullptr : "no AVX512-VNNI");
  if (missing) {
    state.SkipWithError(missing);
    return;
  }
  std::vector<int8_t> a(static_cast<size_t>(M * K)), b(static_cast<size_t>(N * K));
  for (size_t i = 0; i < a.size(); ++i) a[i] = int8_t(int((i * 2654435761u) % 255) - 127);
  for (size_t i = 0; i < b.size(); ++i) b[i] = int8_t(int((i * 40503u) % 255) - 127);
  std::vector<float> row_scales(static_cast<size_t>(M), 1e-2f), weight_scales(static_cast<size_t>(N), 1e-3f),
      bias(static_cast<size_t>(N)), c(static_cast<size_t>(M * N)), code_scales(static_cast<size_t>(M));
  std::vector<int32_t> accumulators(static_cast<size_t>(M * N));
  std::vector<int8_t> codes(static_cast<size_t>(M * N));
  fill(bias.data(), N);
  auto finish = [&](const int32_t* acc, int64_t stride, int64_t first, int64_t count) {
    if (epilogue == 1)
      dequantize_gelu_quantize(acc, count, N, stride, row_scales.data() + first, weight_scales.data(), bias.data(),
                               codes.data() + first * N, code_scales.data() + first);
    else if (epilogue == 2)
      dequantize_add(acc, count, N, stride, row_scales.data() + first, weight_scales.data(), bias.data(),
                     c.data() + first * N);
  };
  if (kernel == kAmx) {
    const AmxS8Weights tiles(b.data(), N, K);
    for (auto _ : state) {
      amx_s8_gemm(a.data(), M, K, tiles, finish);
      benchmark::ClobberMemory();
    }
  } else if (kernel == kAvx2) {
    const Avx2S8Weights panels(b.data(), N, K);
    for (auto _ : state) {
      avx2_s8_gemm(a.data(), M, K, panels, finish);
      benchmark::ClobberMemory();
    }
  } else {
    const PackedWeights packed(b.data(), N, K);
    const Int8MatmulSpec spec{.M = M, .a = a.data(), .lda = K, .b = &packed, .c = accumulators.data(), .ldc = N};
    for (auto _ : state) {
      matmul_s8(spec);
      finish(accumulators.data(), N, 0, M);
      benchmark::ClobberMemory();
    }
  }
  state.counters["GOP/s"] = benchmark::Counter(2.0 * double(M) * K * N, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
  const char* names[] = {"oneDNN matmul_s8", "amx_s8_gemm", "avx2_s8_gemm"};
  state.SetLabel(std::string(names[kernel]) + ", " + std::string(isa_name(active_isa())) +
                 ", " + std::to_string(omp_get_max_threads()) + " threads");
}
// The tower's int8 tiles (l2_tile_rows): ConvFFN fc1/fc2 of stages 0-4 and attention qkv/proj of stages 3
// and 4, the product alone and with its epilogue; then the whole stage-2 map in one product. Each on every
// kernel.
void Int8GemmShapes(benchmark::internal::Benchmark* benchmark) {
  const std::vector<std::vector<int64_t>> shapes = {
      {512, 96, 384, 0},    {512, 384, 96, 0},    {256, 192, 768, 0},  {256, 768, 192, 0},  {128, 384, 1536, 0},
      {128, 1536, 384, 0},  {128, 768, 3072, 0},  {128, 3072, 768, 0}, {128, 1536, 6144, 0}, {128, 6144, 1536, 0},
      {128, 768, 2304, 0},  {256, 768, 768, 0},   {512, 96, 384, 1},   {512, 384, 96, 2},   {256, 192, 768, 1},
      {256, 768, 192, 2},   {128, 384, 1536, 1},  {128, 1536, 384, 2}, {128, 768, 3072, 1}, {128, 3072, 768, 2},
      {4096, 384, 1536, 0}, {4096, 1536, 384, 0}};
  for (const std::vector<int64_t>& shape : shapes)
    for (const int64_t kernel : {0, 1, 2}) {
      std::vector<int64_t> args = shape;
      args.push_back(kernel);
      benchmark->Args(args);
    }
}
BENCHMARK(BM_PointwiseGemmInt8)
    ->Apply(Int8GemmShapes)
    ->ArgNames({"M", "K", "N", "epilogue", "kernel"})
    ->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

// The Int8 compute's element-wise passes alone, on data already in cache (they are bound by their
// arithmetic there; bench/vision_profile.sh shows what they cost in the tower): 0 dequantise + GELU +
// requantise of an expand tile, 1 per-pixel quantisation of a depthwise conv's output rows, 2 the
// attention's bfloat16 softmax numerators of a query block, 3 its f32 softmax (CPUs without bfloat16).
// args: rows, cols, kind. Reports elements per CPU second (run with OMP_NUM_THREADS=1).
void BM_Int8Elementwise(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1), kind = state.range(2);
  if (!kernels::vision_int8_available() || (kind == 2 && !kernels::bf16_compute_available())) {
    state.SkipWithError(kind == 2 ? "no AVX512-BF16" : "no AVX2");
    return;
  }
  std::vector<int32_t> accumulators(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < accumulators.size(); ++i) accumulators[i] = int32_t((i * 2654435761u) % 20001) - 10000;
  std::vector<float> values(static_cast<size_t>(rows * cols)), row_scales(static_cast<size_t>(rows), 1e-4f),
      weight_scales(static_cast<size_t>(cols), 2e-2f), bias(static_cast<size_t>(cols)), scales(static_cast<size_t>(rows));
  fill(values.data(), rows * cols);
  fill(bias.data(), cols);
  std::vector<int8_t> codes(static_cast<size_t>(rows * cols));
  std::vector<uint16_t> numerators(static_cast<size_t>(rows * cols));
  std::vector<float> working;  // kind 3 overwrites its input: a fresh copy of the scores each iteration
  for (auto _ : state) {
    if (kind == 3) {
      state.PauseTiming();
      working = values;
      state.ResumeTiming();
    }
    if (kind == 0)
      dequantize_gelu_quantize(accumulators.data(), rows, cols, cols, row_scales.data(), weight_scales.data(), bias.data(),
                               codes.data(), scales.data());
    else if (kind == 1)
      quantize_rows_s8(values.data(), rows, cols, cols, codes.data(), scales.data());
    else if (kind == 2)
      softmax_numerators_bf16(values.data(), rows, cols, numerators.data(), scales.data());
    else
      softmax_rows(working.data(), rows, cols);
    benchmark::ClobberMemory();
  }
  state.counters["elements/s"] = benchmark::Counter(double(rows * cols), benchmark::Counter::kIsIterationInvariantRate,
                                                    benchmark::Counter::kIs1000);
}
// Stage 0's expand tile and conv rows (the largest maps), stage 2's, and one stage-3 attention query block.
BENCHMARK(BM_Int8Elementwise)
    ->Args({512, 384, 0})->Args({128, 1536, 0})->Args({256, 96, 1})->Args({64, 384, 1})->Args({256, 1024, 2})
    ->Args({256, 1024, 3})
    ->ArgNames({"rows", "cols", "kind"})
    ->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

// The ConvFFN's two int8 products as the tower runs them (vision/fastvit.cpp conv_ffn_gemms_int8), one
// thread: per layer, tiles of l2_tile_rows pixels through expand + dequantise/GELU/requantise, then contract
// added into the residual map, over `layers` layers with weights of their own, so that each layer's weights
// leave L2 between uses as they do in the tower, where BM_PointwiseGemmInt8 keeps one product's weights hot.
// GOP/s against bench_peak's vpdpbusd rate is the int8 GEMM efficiency of the ConvFFNs, epilogues included.
// args: pixels, channels, layers
void BM_ConvFFNInt8(benchmark::State& state) {
  const int64_t pixels = state.range(0), channels = state.range(1), layers = state.range(2), hidden = 4 * channels;
  if (!kernels::vision_int8_available()) {
    state.SkipWithError("no AVX2");
    return;
  }
  std::vector<Linear> expand, contract;
  for (int64_t layer = 0; layer < layers; ++layer) {
    Tensor w1({hidden, channels}), b1({hidden}), w2({channels, hidden}), b2({channels});
    fill(w1.data(), w1.numel());
    fill(w2.data(), w2.numel());
    fill(b1.data(), b1.numel());
    fill(b2.data(), b2.numel());
    expand.push_back(Linear::from_f32(std::move(w1), std::move(b1), WeightType::S8));
    contract.push_back(Linear::from_f32(std::move(w2), std::move(b2), WeightType::S8));
  }
  std::vector<int8_t> codes(static_cast<size_t>(pixels * channels)), hidden_codes;
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = int8_t(int((i * 2654435761u) % 255) - 127);
  std::vector<float> scales(static_cast<size_t>(pixels), 1e-2f), x(static_cast<size_t>(pixels * channels), 0.0f),
      hidden_scales;
  const int64_t tile = l2_tile_rows(hidden * int64_t(sizeof(int32_t)), DType::I8);
  hidden_codes.resize(static_cast<size_t>(tile * hidden));
  hidden_scales.resize(static_cast<size_t>(tile));
  for (auto _ : state) {
    for (int64_t layer = 0; layer < layers; ++layer)
      for (int64_t first = 0; first < pixels; first += tile) {
        const int64_t count = std::min(tile, pixels - first);
        expand[size_t(layer)].forward_s8_gelu_requantize(codes.data() + first * channels, scales.data() + first, count,
                                                          hidden_codes.data(), hidden_scales.data());
        contract[size_t(layer)].forward_s8(hidden_codes.data(), hidden_scales.data(), count,
                                           {DType::F32, x.data() + first * channels}, Epilogue::AddToOutput);
      }
    benchmark::ClobberMemory();
  }
  state.counters["GOP/s"] = benchmark::Counter(4.0 * double(pixels) * channels * hidden * layers,
                                               benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
// Stages 0-4 at 1024² (2, 12, 24, 4 and 2 layers; stages 2-4 also on one layer, its weights hot).
BENCHMARK(BM_ConvFFNInt8)
    ->Args({65536, 96, 2})->Args({16384, 192, 12})->Args({4096, 384, 24})->Args({4096, 384, 1})
    ->Args({1024, 768, 4})->Args({1024, 768, 1})->Args({256, 1536, 2})->Args({256, 1536, 1})
    ->ArgNames({"pixels", "channels", "layers"})
    ->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace fastvlm

BENCHMARK_MAIN();
