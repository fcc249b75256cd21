// LLM kernels at Qwen2-0.5B shapes: decode GEMVs (bf16, Q8_0, Q4_0) in GB/s of weights streamed, for one
// and for R = 1..16 activation rows (batched decoding: the multi-row GEMV against the GEMM route), prefill
// GEMMs for 280 positions in GFLOP/s (dense weights, and quantised weights through bf16 or int8), next to
// this machine's measured read bandwidth (BM_DramRead); and quantising bf16 weights as the load does.
// GEMV weights rotate over enough copies to overflow the caches, so the figures are DRAM-bound like
// decoding a real model.
//
// With FASTVLM_BENCH_LLM_MODELS=dir[:f32|:bf16][,...] it also times whole-model prefill of 280 positions
// and one decode step at context 280 (lm_head included), and one batched decode step of B = 1..16 sequences at
// depth 128 (BM_LlmDecodeBatch, tokens/s over the batch), for each model directory: f32 and bf16 (or the one
// named) for a dense checkpoint, the stored format at the default precision (Auto) for a `fastvlm quantize`d
// one. Run with OMP_NUM_THREADS=2 on an idle machine and --benchmark_repetitions=5
// --benchmark_report_aggregates_only=true for medians.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/aligned_vector.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "core/quant.h"
#include "kernels/activations.h"
#include "kernels/capabilities.h"
#include "kernels/dequantize.h"
#include "kernels/gemm.h"
#include "kernels/gemv.h"
#include "kernels/qgemm.h"
#include "kernels/quant_bf16_gemm.h"
#include "kernels/weight_quant.h"
#include "io/checkpoint.h"
#include "llm/kv_cache.h"
#include "models/precision_choice.h"
#include "models/registry.h"

namespace fastvlm {
namespace {

constexpr int64_t kRotationBytes = int64_t(512) << 20;  // well past any last-level cache
constexpr int kPrefillPositions = 280;

std::vector<float> random_floats(size_t count, uint32_t seed, float scale) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& v : values) v = normal(generator);
  return values;
}

// Copies of one weight matrix in a given format, cycled through by the GEMV benchmarks. Each starts on a
// cache line, as the loader's weight arena places them (malloc's 16-byte alignment made every 64-byte load
// of the AVX-512 GEMV span two lines, and the benchmark slower than the engine).
// Quantised codes are laid out as the loader lays them out at the active level (kernels::quant_row_block,
// core/quant.h); FASTVLM_BENCH_ROW_BLOCK=1 or 4 measures plain rows or blocks of 4 instead.
int64_t bench_row_block() {
  const char* value = std::getenv("FASTVLM_BENCH_ROW_BLOCK");
  return value ? std::max<int64_t>(1, std::atoll(value)) : kernels::quant_row_block();
}

struct WeightCopies {
  std::vector<AlignedVector<uint16_t>> bf16;
  std::vector<AlignedVector<uint8_t>> codes;
  std::vector<AlignedVector<uint16_t>> scales;
  int64_t bytes_per_copy = 0;
  int64_t row_block = bench_row_block();
};

WeightCopies make_copies(const char* format, int64_t rows, int64_t cols, int64_t rotation_bytes = kRotationBytes) {
  const std::vector<float> weights = random_floats(size_t(rows * cols), 1, 0.05f);
  WeightCopies copies;
  const std::string name = format;
  if (name == "bf16") {
    copies.bytes_per_copy = rows * cols * 2;
  } else {
    const WeightType type = name == "q8_0" ? WeightType::Q8_0 : WeightType::Q4_0;
    copies.bytes_per_copy = rows * quant_row_bytes(type, cols) + rows * cols / kQuantGroupSize * 2;
  }
  const int64_t count = std::max<int64_t>(1, rotation_bytes / copies.bytes_per_copy);
  for (int64_t i = 0; i < count; ++i) {
    if (name == "bf16") {
      AlignedVector<uint16_t> w(weights.size());
      f32_to_bf16_simd(weights.data(), w.data(), int64_t(w.size()));
      copies.bf16.push_back(std::move(w));
    } else {
      const WeightType type = name == "q8_0" ? WeightType::Q8_0 : WeightType::Q4_0;
      AlignedVector<uint8_t> codes(size_t(rows * quant_row_bytes(type, cols)));
      AlignedVector<uint16_t> scales(size_t(rows * cols / kQuantGroupSize));
      quantize_matrix(type, weights.data(), rows, cols, codes.data(), scales.data());
      block_rows_in_place(codes.data(), rows, quant_row_bytes(type, cols), copies.row_block);
      copies.codes.push_back(std::move(codes));
      copies.scales.push_back(std::move(scales));
    }
  }
  return copies;
}

// At the active kernel level: FASTVLM_ISA=avx2 measures the AVX2 variants. With `cached`, one copy that stays
// in L2: the kernel's arithmetic cost without DRAM (whether a GEMV is bound by memory or by unpacking).
void BM_Gemv(benchmark::State& state, const char* format, bool cached) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const WeightCopies copies = make_copies(format, rows, cols, cached ? 0 : kRotationBytes);
  const std::vector<float> x = random_floats(size_t(cols), 2, 1.0f);
  std::vector<float> y(static_cast<size_t>(rows));
  const bool bf16 = !copies.bf16.empty();
  const size_t count = bf16 ? copies.bf16.size() : copies.codes.size();
  const WeightType type = std::string(format) == "q8_0" ? WeightType::Q8_0 : WeightType::Q4_0;
  size_t next = 0;
  for (auto _ : state) {
    if (bf16) {
      gemv_bf16(copies.bf16[next].data(), rows, cols, x.data(), y.data());
    } else {
      gemv_quant(QuantMatrix{type, copies.codes[next].data(), copies.scales[next].data(), rows, cols, copies.row_block}, x.data(),
                 y.data());
    }
    benchmark::DoNotOptimize(y.data());
    next = (next + 1) % count;
  }
  state.counters["GB/s"] = benchmark::Counter(double(copies.bytes_per_copy) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// Batched decode: y[R, rows] = x[R, cols] · Wᵀ for R = range(2) activation rows, over rotating weight copies.
// Route "rows": the multi-row GEMV (gemv_quant_rows / gemv_bf16_rows) that Linear::forward_decoder uses up
// to its threshold; "batch" (quantised only): gemv_quant_batch, the int8-tile product it uses for up to 16
// rows where the CPU has AMX (elsewhere the same as "rows"); "gemm": the prefill GEMM it uses above
// (linear_quant on the stored codes, or x to bf16 + linear_bf16); "f32": the route of CPUs without those
// GEMMs (W dequantised or widened to float32 per call, then linear_f32). GB/s counts each weight once per
// call, so "rows" near BM_Gemv's figure means one weight pass.
enum class DecodeRoute { Rows, Batch, Gemm, F32 };

void BM_DecodeRows(benchmark::State& state, const char* format, DecodeRoute route) {
  const bool gemm = route == DecodeRoute::Gemm;
  const int64_t rows = state.range(0), cols = state.range(1), x_rows = state.range(2);
  const WeightCopies copies = make_copies(format, rows, cols);
  const std::vector<float> x = random_floats(size_t(x_rows * cols), 2, 1.0f);
  std::vector<uint16_t> x_bf16(x.size());
  std::vector<float> y(size_t(x_rows * rows));
  std::vector<float> weights_f32(route == DecodeRoute::F32 ? size_t(rows * cols) : 0);
  const bool bf16 = !copies.bf16.empty();
  if (gemm && (bf16 ? !kernels::bf16_compute_available() : !kernels::quant_int8_gemm_available())) {
    state.SkipWithError("no GEMM on bf16 or block-quantised weights on this CPU");
    return;
  }
  const size_t count = bf16 ? copies.bf16.size() : copies.codes.size();
  const WeightType type = std::string(format) == "q8_0" ? WeightType::Q8_0 : WeightType::Q4_0;
  size_t next = 0;
  for (auto _ : state) {
    if (route == DecodeRoute::F32) {
      if (bf16) {
        convert_to_f32(DType::BF16, copies.bf16[next].data(), weights_f32.data(), weights_f32.size());
      } else {
        dequantize_rows_f32(QuantMatrix{type, copies.codes[next].data(), copies.scales[next].data(), rows, cols, copies.row_block}, 0,
                            rows, weights_f32.data());
      }
      linear_f32(x.data(), x_rows, cols, weights_f32.data(), rows, nullptr, y.data());
    } else if (bf16) {
      if (gemm) {
        f32_to_bf16_simd(x.data(), x_bf16.data(), int64_t(x.size()));
        linear_bf16(x_bf16.data(), x_rows, cols, copies.bf16[next].data(), rows, nullptr, y.data());
      } else {
        gemv_bf16_rows(copies.bf16[next].data(), rows, cols, x.data(), x_rows, y.data());
      }
    } else {
      const QuantMatrix matrix{type, copies.codes[next].data(), copies.scales[next].data(), rows, cols, copies.row_block};
      if (gemm) {
        linear_quant(x.data(), x_rows, matrix, nullptr, y.data());
      } else if (route == DecodeRoute::Batch) {
        gemv_quant_batch(matrix, x.data(), x_rows, y.data());
      } else {
        gemv_quant_rows(matrix, x.data(), x_rows, y.data());
      }
    }
    benchmark::DoNotOptimize(y.data());
    next = (next + 1) % count;
  }
  state.counters["GB/s"] = benchmark::Counter(double(copies.bytes_per_copy) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// Peak read bandwidth: a threaded sum over 512 MB (what a perfect GEMV would reach).
void BM_DramRead(benchmark::State& state) {
  const size_t count = size_t(kRotationBytes) / sizeof(int64_t);
  std::vector<int64_t> data(count, 1);
  for (auto _ : state) {
    int64_t sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
    for (size_t i = 0; i < count; ++i) sum += data[i];
    benchmark::DoNotOptimize(sum);
  }
  state.counters["GB/s"] = benchmark::Counter(double(kRotationBytes) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Prefill GEMM y[280, N] = x[280, K] · Wᵀ: f32 oneDNN, bf16 oneDNN (incl. converting x), and the routes for
// quantised weights: "q8_0"/"q4_0" expand W to bf16 and run the bf16 GEMM (incl. converting x), as prefill
// did before linear_quant; "q8_0_int8"/"q4_0_int8" run linear_quant (int8 products of the stored codes:
// VPDPBUSD, or VPMADDWD on int16 codes on AVX2); "q8_0_amx"/"q4_0_amx" run linear_quant_bf16 (panels expanded to bf16,
// AMX tiles); "q8_0_f32"/"q4_0_f32" dequantise W to float32 and run the f32 GEMM, the route of CPUs without
// int8 or bf16 GEMMs. Args: N, K, rows.
void BM_PrefillGemm(benchmark::State& state, const char* format) {
  const int64_t n = state.range(0), k = state.range(1), m = state.range(2);
  const std::string name = format;
  const bool integer_route = name.ends_with("_int8"), amx_route = name.ends_with("_amx");
  const bool f32_route = name.ends_with("f32");
  const WeightType type = name.starts_with("q4_0") ? WeightType::Q4_0 : WeightType::Q8_0;
  const std::vector<float> weights = random_floats(size_t(n * k), 3, 0.05f);
  const std::vector<float> x = random_floats(size_t(m * k), 4, 1.0f);
  std::vector<float> y(size_t(m * n));
  std::vector<uint16_t> weights_bf16(weights.size()), x_bf16(x.size());
  f32_to_bf16_simd(weights.data(), weights_bf16.data(), int64_t(weights.size()));
  AlignedVector<uint8_t> codes(size_t(n * quant_row_bytes(type, k)));
  AlignedVector<uint16_t> scales(size_t(n * k / kQuantGroupSize));
  quantize_matrix(type, weights.data(), n, k, codes.data(), scales.data());
  const int64_t row_block = bench_row_block();
  block_rows_in_place(codes.data(), n, quant_row_bytes(type, k), row_block);
  const QuantMatrix quantized{type, codes.data(), scales.data(), n, k, row_block};
  std::vector<float> dequantized(name.ends_with("_f32") ? weights.size() : 0);
  if (!f32_route && !integer_route && !amx_route && !kernels::bf16_compute_available()) {
    state.SkipWithError("no AVX512-BF16");
    return;
  }
  if (integer_route && !kernels::quant_int8_gemm_available()) {
    state.SkipWithError("no int8 GEMM on block-quantised weights at this level");
    return;
  }
  if (amx_route && !kernels::amx_bf16_available()) {
    state.SkipWithError("no AMX-BF16");
    return;
  }
  for (auto _ : state) {
    if (name == "f32") {
      linear_f32(x.data(), m, k, weights.data(), n, nullptr, y.data());
    } else if (f32_route) {
      dequantize_rows_f32(quantized, 0, n, dequantized.data());
      linear_f32(x.data(), m, k, dequantized.data(), n, nullptr, y.data());
    } else if (amx_route) {
      linear_quant_bf16(x.data(), m, quantized, nullptr, y.data());
    } else if (integer_route) {
      linear_quant(x.data(), m, quantized, nullptr, y.data());
    } else {
      if (name != "bf16") dequantize_rows_bf16(quantized, 0, n, weights_bf16.data());
      f32_to_bf16_simd(x.data(), x_bf16.data(), int64_t(x.size()));
      linear_bf16(x_bf16.data(), m, k, weights_bf16.data(), n, nullptr, y.data());
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * n * k * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

const std::vector<std::vector<int64_t>> kGemvShapes = {{896, 896}, {4864, 896}, {896, 4864}, {151936, 896}};

// Quantising a bf16 weight matrix at load (Linear::quantize_at_load, the default precision on a bf16
// checkpoint), in G weights/s: "scalar" widens it to float32 and runs core's quantize_matrix, as the load did
// before kernels/weight_quant.h; "kernel" runs quantize_weight_rows on the bf16 rows. Args: N, K (the gate /
// up shape: its 8.7 MB of bf16 stay in a 32 MB L3 between iterations, where the load reads the page cache).
void BM_QuantizeWeights(benchmark::State& state, WeightType type, bool kernel) {
  const int64_t rows = state.range(0), cols = state.range(1);
  AlignedVector<uint16_t> weights(size_t(rows * cols));
  f32_to_bf16_simd(random_floats(weights.size(), 3, 0.05f).data(), weights.data(), int64_t(weights.size()));
  AlignedVector<uint8_t> codes(size_t(rows * quant_row_bytes(type, cols)));
  AlignedVector<uint16_t> scales(size_t(rows * cols / kQuantGroupSize));
  std::vector<float> widened(kernel ? 0 : weights.size());
  for (auto _ : state) {
    if (kernel) {
      benchmark::DoNotOptimize(quantize_weight_rows(type, DType::BF16, weights.data(), rows, cols, codes.data(), scales.data()));
    } else {
      convert_to_f32(DType::BF16, weights.data(), widened.data(), widened.size());
      quantize_matrix(type, widened.data(), rows, cols, codes.data(), scales.data());
    }
    benchmark::ClobberMemory();
  }
  state.counters["Gweights/s"] = benchmark::Counter(double(rows * cols) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void register_kernel_benchmarks() {
  benchmark::RegisterBenchmark("BM_DramRead", BM_DramRead)->Unit(benchmark::kMillisecond)->UseRealTime();
  for (const char* format : {"bf16", "q8_0", "q4_0"}) {
    const std::string name = std::string("BM_Gemv_") + format + "/" + std::string(isa_name(active_isa()));
    auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_Gemv, format, false);
    for (const auto& shape : kGemvShapes) b->Args(shape);
    b->Unit(benchmark::kMicrosecond)->UseRealTime();
  }
  for (const char* format : {"q8_0", "q4_0"}) {
    const std::string name = std::string("BM_GemvCached_") + format + "/" + std::string(isa_name(active_isa()));
    // 384 rows: within a 512 KB L2 (AMD Zen 3), where 896 rows are served from L3. 128 x 4864: the down
    // projection's long rows, within a 1 MB L2 (AMD Zen 4 and 5).
    benchmark::RegisterBenchmark(name.c_str(), BM_Gemv, format, true)
        ->Args({896, 896})->Args({384, 896})->Args({128, 4864})->Unit(benchmark::kMicrosecond);
  }
  for (const char* format : {"bf16", "q8_0", "q4_0"}) {
    for (const auto& [route, route_name] : {std::pair{DecodeRoute::Rows, "_rows/"}, std::pair{DecodeRoute::Batch, "_batch/"},
                                            std::pair{DecodeRoute::Gemm, "_gemm/"}, std::pair{DecodeRoute::F32, "_f32/"}}) {
      if (route == DecodeRoute::Batch && std::string(format) == "bf16") continue;
      const std::string name = std::string("BM_DecodeRows_") + format + route_name + std::string(isa_name(active_isa()));
      auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_DecodeRows, format, route);
      for (const auto& shape : std::vector<std::vector<int64_t>>{{896, 896}, {4864, 896}, {896, 4864}})
        for (const int64_t x_rows : {1, 2, 3, 4, 6, 8, 12, 16}) b->Args({shape[0], shape[1], x_rows});
      b->Unit(benchmark::kMicrosecond)->UseRealTime();
    }
  }
  for (const char* format : {"f32", "bf16", "q8_0", "q8_0_int8", "q8_0_amx", "q8_0_f32", "q4_0", "q4_0_int8",
                             "q4_0_amx", "q4_0_f32"}) {
    auto* b = benchmark::RegisterBenchmark((std::string("BM_PrefillGemm_") + format).c_str(), BM_PrefillGemm, format);
    for (const auto& shape : std::vector<std::vector<int64_t>>{{896, 896}, {128, 896}, {4864, 896}, {896, 4864}})
      b->Args({shape[0], shape[1], kPrefillPositions});
    b->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  for (const auto& [type, type_name] : {std::pair{WeightType::Q8_0, "q8_0"}, std::pair{WeightType::Q4_0, "q4_0"}})
    for (const bool kernel : {false, true}) {
      const std::string name = std::string("BM_QuantizeWeights_") + type_name + (kernel ? "/kernel" : "/scalar");
      benchmark::RegisterBenchmark(name.c_str(), BM_QuantizeWeights, type, kernel)
          ->Args({4864, 896})->Unit(benchmark::kMillisecond)->UseRealTime();
    }
  // Where the AMX route starts to beat the int8 one (Linear's prefill threshold): fewer activation rows.
  for (const char* format : {"q8_0_int8", "q8_0_amx", "q4_0_int8", "q4_0_amx"}) {
    auto* b = benchmark::RegisterBenchmark((std::string("BM_PrefillRows_") + format).c_str(), BM_PrefillGemm, format);
    for (const auto& shape : std::vector<std::vector<int64_t>>{{896, 896}, {4864, 896}, {896, 4864}})
      for (const int64_t rows : {8, 16, 32, 64, 128}) b->Args({shape[0], shape[1], rows});
    b->Unit(benchmark::kMicrosecond)->UseRealTime();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Whole-model timings.

struct LoadedModel {
  std::unique_ptr<Model> whole;
  const TextDecoder* model = nullptr;
  std::vector<float> prompt;  // [280, hidden] embeddings of random token ids
};

std::shared_ptr<LoadedModel> load_decoder(const std::string& dir, Precision precision) {
  auto loaded = std::make_shared<LoadedModel>();
  loaded->whole = load_model(dir, resolve_precision(precision));
  loaded->model = loaded->whole->decoder.get();
  std::mt19937 generator(5);
  std::uniform_int_distribution<int32_t> token(0, 150000);
  std::vector<int32_t> ids(kPrefillPositions);
  for (int32_t& id : ids) id = token(generator);
  loaded->prompt.resize(size_t(kPrefillPositions) * loaded->model->config().hidden_size);
  loaded->model->embed(ids, loaded->prompt.data());
  return loaded;
}

void BM_LlmPrefill(benchmark::State& state, std::shared_ptr<LoadedModel> m) {
  KVCache cache(m->model->config(), kPrefillPositions + 1);
  for (auto _ : state) {
    cache.clear();
    benchmark::DoNotOptimize(m->model->forward(m->prompt.data(), kPrefillPositions, cache));
  }
}

void BM_LlmDecodeStep(benchmark::State& state, std::shared_ptr<LoadedModel> m) {
  KVCache cache(m->model->config(), kPrefillPositions + 1);
  m->model->forward(m->prompt.data(), kPrefillPositions - 1, cache);
  const float* next = m->prompt.data() + size_t(kPrefillPositions - 1) * m->model->config().hidden_size;
  for (auto _ : state) {
    cache.truncate(kPrefillPositions - 1);
    benchmark::DoNotOptimize(m->model->forward(next, 1, cache));
  }
}

// One batched decode step (TextDecoder::forward_batch, as the scheduler runs it) for B = range(0) sequences,
// each with its own cache at depth 128: tokens/s over all sequences against B = 1 shows how close a batch
// comes to one weight pass.
void BM_LlmDecodeBatch(benchmark::State& state, std::shared_ptr<LoadedModel> m) {
  constexpr int kDepth = 128;
  const int batch = int(state.range(0));
  const int64_t hidden = m->model->config().hidden_size;
  std::vector<std::unique_ptr<KVCache>> caches;
  std::vector<KVCache*> pointers;
  for (int b = 0; b < batch; ++b) {
    caches.push_back(std::make_unique<KVCache>(m->model->config(), kDepth + 1));
    m->model->forward(m->prompt.data() + size_t(b) * hidden, kDepth, *caches.back());
    pointers.push_back(caches.back().get());
  }
  const float* next = m->prompt.data() + size_t(kDepth) * hidden;  // B rows of embeddings
  for (auto _ : state) {
    for (KVCache* cache : pointers) cache->truncate(kDepth);
    benchmark::DoNotOptimize(m->model->forward_batch(next, pointers));
  }
  state.counters["tokens/s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
}

void register_model_benchmarks() {
  const char* list = std::getenv("FASTVLM_BENCH_LLM_MODELS");
  if (!list) return;
  std::stringstream dirs(list);
  for (std::string entry; std::getline(dirs, entry, ',');) {
    const size_t colon = entry.rfind(':');
    const std::string dir = colon == std::string::npos ? entry : entry.substr(0, colon);
    const std::string only = colon == std::string::npos ? "" : entry.substr(colon + 1);
    const auto probe = Checkpoint::open(dir);
    const std::string quantization = probe->quantization().type;
    std::vector<std::pair<std::string, Precision>> variants;
    if (quantization.empty()) {
      if (only != "bf16") variants.push_back({"f32", Precision::F32});
      if (only != "f32") variants.push_back({"bf16", Precision::Bf16});
    } else {
      variants = {{quantization, Precision::Auto}};
    }
    for (const auto& [label, precision] : variants) {
      auto model = load_decoder(dir, precision);
      benchmark::RegisterBenchmark(("BM_LlmPrefill280/" + label).c_str(), BM_LlmPrefill, model)
          ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
      benchmark::RegisterBenchmark(("BM_LlmDecodeStep/" + label).c_str(), BM_LlmDecodeStep, model)
          ->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
      benchmark::RegisterBenchmark(("BM_LlmDecodeBatch/" + label).c_str(), BM_LlmDecodeBatch, model)
          ->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
    }
  }
}

}  // namespace
}  // namespace fastvlm

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("isa", std::string(fastvlm::isa_name(fastvlm::active_isa())));
  fastvlm::register_kernel_benchmarks();
  fastvlm::register_model_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
