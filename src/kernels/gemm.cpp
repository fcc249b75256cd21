#include "kernels/gemm.h"

#include <omp.h>

#include <algorithm>

#include <oneapi/dnnl/dnnl.hpp>

#include "core/cpu.h"
#include "core/error.h"
#include "kernels/activations.h"
#include "kernels/avx2_f32_gemm.h"
#include "kernels/capabilities.h"

namespace fastvlm {
namespace {

// oneDNN's JIT level follows FASTVLM_ISA too (it can only be capped before the first primitive exists).
dnnl::cpu_isa onednn_isa_cap(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return dnnl::cpu_isa::sse41;
    case Isa::Avx2: return dnnl::cpu_isa::avx2;
    case Isa::Avx512: return dnnl::cpu_isa::avx512_core_bf16;
    case Isa::Amx: return dnnl::cpu_isa::all;
  }
  return dnnl::cpu_isa::all;
}

dnnl::engine& cpu_engine() {
  static dnnl::engine engine = [] {
    if (active_isa() != detected_isa()) dnnl::set_max_cpu_isa(onednn_isa_cap(active_isa()));
    return dnnl::engine(dnnl::engine::kind::cpu, 0);
  }();
  return engine;
}

}  // namespace

int64_t min_tile_rows(DType type) { return type == DType::F32 && active_isa() < Isa::Avx512 ? 512 : 128; }

struct PackedWeights::Layout {
  dnnl::memory::desc desc;
  dnnl::memory panels;  // owns the packed bytes
};

namespace {

void require_int8_compute(const char* what) {
  if (!kernels::int8_compute_available())
    throw Error(std::string(what) + ": int8 operands need AVX512-VNNI, which this CPU (or FASTVLM_ISA=" +
                kernels::kernel_level_name() + ") does not offer");
}

void require_bf16_compute(const char* what) {
  if (!kernels::bf16_compute_available())
    throw Error(std::string(what) + ": bfloat16 operands need AVX512-BF16, which this CPU (or FASTVLM_ISA=" +
                kernels::kernel_level_name() + ") does not offer; use the float32 path");
}

// Row-major [rows, cols] of `type` with rows `ld` elements apart.
dnnl::memory::desc rows_of(dnnl::memory::data_type type, int64_t rows, int64_t cols, int64_t ld) {
  return dnnl::memory::desc({rows, cols}, type, dnnl::memory::dims{ld, 1});
}

// The tower's tiles are 128 to 1024 pixels. oneDNN picks the same weight layout for every M from 64 up,
// and its brgemm accepts that layout for smaller M too.
constexpr int64_t kPackingRows = 128;

// The layout oneDNN 2.6 picks for int8 weights [K, N] of its AVX512-VNNI matmul: blocks of 64 K x 64 N, the
// N blocks outermost (format tag BA16a64b4a: in a block, 16 steps of 4 K positions, each 64 columns of 4
// bytes), zeros to whole blocks, then one int32 per padded column, -128 · Σ_k w[k][n]: the correction for
// the +128 it adds to make s8 activations unsigned (the "s8s8 compensation"). Its reorder into that layout is
// a generic one at ~0.2 GB/s per thread: half a second of every load for the vision tower's int8 weights on
// a 2-core Zen 4. Recognised from the descriptor's public fields; anything else goes through the reorder.
constexpr int64_t kVnniBlock = 64, kVnniStep = 4;

bool is_vnni_s8_blocks(const dnnl::memory::desc& desc) {
  const dnnl_memory_desc_t& md = desc.data;
  if (md.ndims != 2 || md.data_type != dnnl_s8 || md.format_kind != dnnl_blocked || md.offset0 != 0) return false;
  const auto& blocking = md.format_desc.blocking;
  const int64_t padded_k = md.padded_dims[0], padded_n = md.padded_dims[1];
  return blocking.inner_nblks == 3 && blocking.inner_blks[0] == kVnniBlock / kVnniStep && blocking.inner_idxs[0] == 0 &&
         blocking.inner_blks[1] == kVnniBlock && blocking.inner_idxs[1] == 1 && blocking.inner_blks[2] == kVnniStep &&
         blocking.inner_idxs[2] == 0 && padded_k % kVnniBlock == 0 && padded_n % kVnniBlock == 0 &&
         blocking.strides[0] == kVnniBlock * kVnniBlock && blocking.strides[1] == padded_k * kVnniBlock &&
         md.padded_offsets[0] == 0 && md.padded_offsets[1] == 0 &&
         md.extra.flags == dnnl_memory_extra_flag_compensation_conv_s8s8 && md.extra.compensation_mask == 2 &&
         desc.get_size() >= size_t(padded_k * padded_n) + size_t(padded_n) * sizeof(int32_t);
}

// Packs B[N, K] (row-major codes) into a descriptor is_vnni_s8_blocks accepts, threaded over column blocks.
void pack_vnni_s8_blocks(const dnnl::memory::desc& desc, const int8_t* codes, int64_t N, int64_t K, void* out) {
  const int64_t padded_k = desc.data.padded_dims[0], padded_n = desc.data.padded_dims[1];
  auto* blocks = static_cast<int8_t*>(out);
  auto* compensation = reinterpret_cast<int32_t*>(blocks + padded_k * padded_n);
#pragma omp parallel for schedule(static)
  for (int64_t first_n = 0; first_n < padded_n; first_n += kVnniBlock) {
    int8_t* block = blocks + first_n * padded_k;  // the column block's K blocks, one after another
    for (int64_t k = 0; k < padded_k; k += kVnniStep)
      for (int64_t n = first_n; n < first_n + kVnniBlock; ++n, block += kVnniStep) {
        const int64_t present = n < N ? std::clamp<int64_t>(K - k, 0, kVnniStep) : 0;
        for (int64_t i = 0; i < kVnniStep; ++i) block[i] = i < present ? codes[n * K + k + i] : 0;
      }
    for (int64_t n = first_n; n < first_n + kVnniBlock; ++n) {
      int32_t sum = 0;
      for (int64_t k = 0; n < N && k < K; ++k) sum += codes[n * K + k];
      compensation[n] = -128 * sum;
    }
  }
}

}  // namespace

PackedWeights::PackedWeights(const int8_t* codes, int64_t N, int64_t K) : PackedWeights(DType::I8, codes, N, K) {}

PackedWeights::PackedWeights(const uint16_t* bf16, int64_t N, int64_t K) : PackedWeights(DType::BF16, bf16, N, K) {}

PackedWeights::PackedWeights(const float* f32, int64_t N, int64_t K) : PackedWeights(DType::F32, f32, N, K) {}

PackedWeights::PackedWeights(DType type, const void* weights, int64_t N, int64_t K) : type_(type), N_(N), K_(K) {
  using data_type = dnnl::memory::data_type;
  const bool int8 = type == DType::I8;
  if (int8)
    require_int8_compute("PackedWeights");
  else if (type == DType::BF16)
    require_bf16_compute("PackedWeights");
  if (N <= 0 || K <= 0)
    throw Error("PackedWeights: a weight matrix needs rows and columns, got " + std::to_string(N) + "x" +
                std::to_string(K));
  if (type == DType::F32 && active_isa() == Isa::Avx2) {
    avx2_f32_ = std::make_unique<Avx2F32Weights>(static_cast<const float*>(weights), N, K);
    return;
  }
  auto& engine = cpu_engine();
  const data_type ab = int8 ? data_type::s8 : type == DType::BF16 ? data_type::bf16 : data_type::f32;
  const dnnl::memory::desc any({K, N}, ab, dnnl::memory::format_tag::any);
  const dnnl::matmul::primitive_desc chosen(
      dnnl::matmul::desc(rows_of(ab, kPackingRows, K, K), any,
                         rows_of(int8 ? data_type::s32 : data_type::f32, kPackingRows, N, N)),
      engine);
  layout_ = std::make_unique<Layout>(Layout{chosen.weights_desc(), dnnl::memory(chosen.weights_desc(), engine)});
  if (int8 && is_vnni_s8_blocks(layout_->desc)) {
    pack_vnni_s8_blocks(layout_->desc, static_cast<const int8_t*>(weights), N, K, layout_->panels.get_data_handle());
    return;
  }
  // B[N,K] row-major is the [K,N] matrix oneDNN multiplies with, stored column-major.
  const dnnl::memory::desc plain({K, N}, ab, dnnl::memory::dims{1, K});
  dnnl::memory source(plain, engine, const_cast<void*>(weights));
  dnnl::stream stream(engine);
  dnnl::reorder(source, layout_->panels).execute(stream, source, layout_->panels);
  stream.wait();
}

PackedWeights::~PackedWeights() = default;

void gemm_f32(bool b_transposed, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
              const float* B, int64_t ldb, float* C, int64_t ldc, const float* bias) {
  MatmulSpec spec;
  spec.M = M, spec.N = N, spec.K = K;
  spec.a = A, spec.lda = lda, spec.b = B, spec.ldb = ldb, spec.b_transposed = b_transposed;
  spec.c = C, spec.ldc = ldc, spec.bias = bias;
  matmul(spec);
}

void linear_bf16(const uint16_t* x, int64_t M, int64_t K, const uint16_t* w, int64_t N, const float* bias, float* y) {
  MatmulSpec spec;
  spec.M = M, spec.N = N, spec.K = K;
  spec.ab_type = DType::BF16;
  spec.a = x, spec.lda = K, spec.b = w, spec.ldb = K;
  spec.c = y, spec.ldc = N, spec.bias = bias;
  matmul(spec);
}

namespace {

dnnl::memory::data_type onednn_type(DType type) {
  return type == DType::BF16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

// oneDNN's own primitive cache also keys on the descriptors, but looking a primitive up there costs a
// descriptor hash per call; the vision tower issues thousands of identical products per image, so
// the created primitives are kept here under the exact shape/stride/type/epilogue combination.
struct MatmulKey {
  int64_t M, N, K, lda, ldb, ldc;
  DType ab_type, c_type;
  bool b_transposed, has_bias;
  Epilogue epilogue;
  bool operator==(const MatmulKey&) const = default;
};

struct MatmulKeyHash {
  size_t operator()(const MatmulKey& key) const {
    size_t hash = 0;
    for (int64_t value : {key.M, key.N, key.K, key.lda, key.ldb, key.ldc, int64_t(key.ab_type), int64_t(key.c_type),
                          int64_t(key.b_transposed), int64_t(key.has_bias), int64_t(key.epilogue)})
      hash = hash * 1000003u ^ std::hash<int64_t>()(value);
    return hash;
  }
};

// A created product with its argument list: memory objects made once, which each call points at its
// operands (see Int8MatmulPrimitive below).
struct MatmulPrimitive {
  dnnl::matmul primitive;
  std::unordered_map<int, dnnl::memory> args;
};

// `packed`: B's layout when it was packed at load, else null.
MatmulPrimitive create_matmul(const MatmulKey& key, const PackedWeights* packed) {
  using dims = dnnl::memory::dims;
  auto& engine = cpu_engine();
  const auto ab = onednn_type(key.ab_type);
  const dnnl::memory::desc a({key.M, key.K}, ab, dims{key.lda, 1});
  const dnnl::memory::desc b =
      packed ? packed->layout().desc
             : dnnl::memory::desc({key.K, key.N}, ab, key.b_transposed ? dims{1, key.ldb} : dims{key.ldb, 1});
  const dnnl::memory::desc c({key.M, key.N}, onednn_type(key.c_type), dims{key.ldc, 1});
  const dnnl::memory::desc bias({1, key.N}, dnnl::memory::data_type::f32, dims{key.N, 1});
  dnnl::post_ops post_ops;
  if (key.epilogue == Epilogue::Gelu) post_ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
  if (key.epilogue == Epilogue::AddToOutput) post_ops.append_sum(1.0f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(post_ops);
  auto desc = key.has_bias ? dnnl::matmul::desc(a, b, bias, c) : dnnl::matmul::desc(a, b, c);
  MatmulPrimitive created{dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, engine)),
                          {{DNNL_ARG_SRC, dnnl::memory(a, engine, DNNL_MEMORY_NONE)},
                           {DNNL_ARG_WEIGHTS, packed ? dnnl::memory() : dnnl::memory(b, engine, DNNL_MEMORY_NONE)},
                           {DNNL_ARG_DST, dnnl::memory(c, engine, DNNL_MEMORY_NONE)}}};
  if (key.has_bias) created.args.emplace(DNNL_ARG_BIAS, dnnl::memory(bias, engine, DNNL_MEMORY_NONE));
  return created;
}

}  // namespace

void matmul(const MatmulSpec& spec) {
  if (spec.M <= 0 || spec.N <= 0) return;
  const auto floating = [](DType type) { return type == DType::F32 || type == DType::BF16; };
  if (!floating(spec.ab_type) || !floating(spec.c_type))
    throw Error("matmul: operands are F32 or BF16, not " + std::string(dtype_name(spec.ab_type)) + " x " +
                std::string(dtype_name(spec.c_type)));
  if (spec.ab_type == DType::BF16) require_bf16_compute("matmul");
  if (spec.epilogue == Epilogue::AddToOutput && spec.c_type != DType::F32)
    throw Error("matmul: adding to the output needs a float32 output");
  const PackedWeights* packed = spec.packed_b;
  if (packed && (packed->type() != spec.ab_type || packed->rows() != spec.N || packed->cols() != spec.K))
    throw Error("internal: matmul on " + std::string(dtype_name(spec.ab_type)) + " [" + std::to_string(spec.N) + ", " +
                std::to_string(spec.K) + "] weights got packed " + std::string(dtype_name(packed->type())) + " [" +
                std::to_string(packed->rows()) + ", " + std::to_string(packed->cols()) + "]");
  if (packed && packed->avx2_f32()) {
    if (spec.c_type != DType::F32) throw Error("internal: float32 weights packed for AVX2 write float32 results");
    avx2_f32_gemm(static_cast<const float*>(spec.a), spec.M, spec.lda, *packed->avx2_f32(), static_cast<float*>(spec.c),
                  spec.ldc, spec.bias, spec.epilogue);
    return;
  }
  // GELU on float32 results runs as a pass over them while they are in cache: gelu_simd's erf polynomial
  // costs about a third of oneDNN 2.6's GELU post-op, which matters after the vision tower's short-K expand
  // products. Bfloat16 results are rounded by the product, so there it stays a post-op.
  const bool gelu_pass = spec.epilogue == Epilogue::Gelu && spec.c_type == DType::F32;
  // A packed layout is a function of (type, N, K) at the active level: ldb -1 stands for it in the key.
  const MatmulKey key{spec.M,       spec.N,       spec.K,       spec.lda,         packed ? -1 : spec.ldb,
                      spec.ldc,     spec.ab_type, spec.c_type,  packed || spec.b_transposed, spec.bias != nullptr,
                      gelu_pass ? Epilogue::None : spec.epilogue};
  // One cache per thread: the tower may call from inside OpenMP regions, and primitives are
  // cheap enough to hold twice.
  thread_local std::unordered_map<MatmulKey, MatmulPrimitive, MatmulKeyHash> primitives;
  auto found = primitives.find(key);
  if (found == primitives.end()) {
    // Prefill attention meets a new shape per prompt length: bound what a long-running server keeps.
    if (primitives.size() >= 512) primitives.clear();
    found = primitives.emplace(key, create_matmul(key, packed)).first;
  }
  MatmulPrimitive& created = found->second;
  created.args.at(DNNL_ARG_SRC).set_data_handle(const_cast<void*>(spec.a));
  // Packed weights are a shared handle (not a copy), dropped after the call so that the cache never
  // keeps unloaded weights alive.
  if (packed)
    created.args.at(DNNL_ARG_WEIGHTS) = packed->layout().panels;
  else
    created.args.at(DNNL_ARG_WEIGHTS).set_data_handle(const_cast<void*>(spec.b));
  created.args.at(DNNL_ARG_DST).set_data_handle(spec.c);
  if (spec.bias) created.args.at(DNNL_ARG_BIAS).set_data_handle(const_cast<float*>(spec.bias));
  thread_local dnnl::stream stream(cpu_engine());
  created.primitive.execute(stream, created.args);
  stream.wait();
  if (packed) created.args.at(DNNL_ARG_WEIGHTS) = dnnl::memory();
  if (gelu_pass) {
    // Over the threads the product ran on, unless this is already one of a team's threads.
    float* c = static_cast<float*>(spec.c);
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && spec.M * spec.N >= (int64_t(1) << 16))
    for (int64_t r = 0; r < spec.M; ++r) gelu_simd(c + r * spec.ldc, spec.N);
  }
}

}  // namespace fastvlm

namespace fastvlm {
namespace {

// A created int8 product with its argument list. The tower issues thousands of these per image, most of
// them tens of microseconds long: the memory objects and the stream are made once, and each call only
// points them at its operands, rather than building three memory objects, a map and a stream per call.
struct Int8MatmulPrimitive {
  dnnl::matmul primitive;
  std::unordered_map<int, dnnl::memory> args;
};

Int8MatmulPrimitive create_matmul_s8(const MatmulKey& key, const dnnl::memory::desc& packed) {
  auto& engine = cpu_engine();
  const auto a = rows_of(dnnl::memory::data_type::s8, key.M, key.K, key.lda);
  const auto c = rows_of(dnnl::memory::data_type::s32, key.M, key.N, key.ldc);
  return {dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, packed, c), engine)),
          {{DNNL_ARG_SRC, dnnl::memory(a, engine, DNNL_MEMORY_NONE)},
           {DNNL_ARG_WEIGHTS, dnnl::memory()},
           {DNNL_ARG_DST, dnnl::memory(c, engine, DNNL_MEMORY_NONE)}}};
}

}  // namespace

void matmul_s8(const Int8MatmulSpec& spec) {
  if (spec.M <= 0) return;
  require_int8_compute("matmul_s8");
  const PackedWeights& b = *spec.b;
  if (b.type() != DType::I8) throw Error("internal: matmul_s8 on packed " + std::string(dtype_name(b.type())) + " weights");
  // The packed layout is a function of (N, K) at the active level, so the shape is the whole key; the
  // key's types, transposition, bias and epilogue are fixed for int8 products.
  const MatmulKey key{spec.M, b.rows(), b.cols(), spec.lda, 0, spec.ldc, DType::F32, DType::F32, true, false,
                      Epilogue::None};
  thread_local std::unordered_map<MatmulKey, Int8MatmulPrimitive, MatmulKeyHash> primitives;
  thread_local dnnl::stream stream(cpu_engine());
  auto found = primitives.find(key);
  if (found == primitives.end()) {
    if (primitives.size() >= 512) primitives.clear();
    found = primitives.emplace(key, create_matmul_s8(key, b.layout().desc)).first;
  }
  Int8MatmulPrimitive& created = found->second;
  created.args.at(DNNL_ARG_SRC).set_data_handle(const_cast<int8_t*>(spec.a));
  created.args.at(DNNL_ARG_WEIGHTS) = b.layout().panels;  // a shared handle, not a copy of the panels
  created.args.at(DNNL_ARG_DST).set_data_handle(spec.c);
  created.primitive.execute(stream, created.args);
  stream.wait();
  created.args.at(DNNL_ARG_WEIGHTS) = dnnl::memory();  // the cache must not keep unloaded weights alive
}

}  // namespace fastvlm
