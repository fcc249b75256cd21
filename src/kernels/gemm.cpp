#include "kernels/gemm.h"

#include <oneapi/dnnl/dnnl.hpp>

#include "core/cpu.h"
#include "core/error.h"
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

// A created product with the memory descriptors its arguments are wrapped in.
struct MatmulPrimitive {
  dnnl::memory::desc a, b, c, bias;
  dnnl::matmul primitive;
};

MatmulPrimitive create_matmul(const MatmulKey& key) {
  using dims = dnnl::memory::dims;
  const auto ab = onednn_type(key.ab_type);
  MatmulPrimitive created;
  created.a = dnnl::memory::desc({key.M, key.K}, ab, dims{key.lda, 1});
  created.b = dnnl::memory::desc({key.K, key.N}, ab, key.b_transposed ? dims{1, key.ldb} : dims{key.ldb, 1});
  created.c = dnnl::memory::desc({key.M, key.N}, onednn_type(key.c_type), dims{key.ldc, 1});
  created.bias = dnnl::memory::desc({1, key.N}, dnnl::memory::data_type::f32, dims{key.N, 1});
  dnnl::post_ops post_ops;
  if (key.epilogue == Epilogue::Gelu) post_ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
  if (key.epilogue == Epilogue::AddToOutput) post_ops.append_sum(1.0f);
  dnnl::primitive_attr attr;
  attr.set_post_ops(post_ops);
  auto desc = key.has_bias ? dnnl::matmul::desc(created.a, created.b, created.bias, created.c)
                           : dnnl::matmul::desc(created.a, created.b, created.c);
  created.primitive = dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, cpu_engine()));
  return created;
}

}  // namespace

void matmul(const MatmulSpec& spec) {
  if (spec.M <= 0 || spec.N <= 0) return;
  const auto floating = [](DType type) { return type == DType::F32 || type == DType::BF16; };
  if (!floating(spec.ab_type) || !floating(spec.c_type))
    throw Error("matmul: operands are F32 or BF16, not " + std::string(dtype_name(spec.ab_type)) + " x " +
                std::string(dtype_name(spec.c_type)));
  if (spec.ab_type == DType::BF16 && !kernels::bf16_compute_available())
    throw Error("matmul: bfloat16 operands need AVX512-BF16, which this CPU (or FASTVLM_ISA=" +
                kernels::kernel_level_name() + ") does not offer; use the float32 path");
  if (spec.epilogue == Epilogue::AddToOutput && spec.c_type != DType::F32)
    throw Error("matmul: adding to the output needs a float32 output");
  const MatmulKey key{spec.M,       spec.N,       spec.K,       spec.lda,         spec.ldb,
                      spec.ldc,     spec.ab_type, spec.c_type,  spec.b_transposed, spec.bias != nullptr,
                      spec.epilogue};
  // One cache per thread: the tower may call from inside OpenMP regions, and primitives are
  // cheap enough to hold twice.
  thread_local std::unordered_map<MatmulKey, MatmulPrimitive, MatmulKeyHash> primitives;
  auto found = primitives.find(key);
  if (found == primitives.end()) {
    // Prefill attention meets a new shape per prompt length: bound what a long-running server keeps.
    if (primitives.size() >= 512) primitives.clear();
    found = primitives.emplace(key, create_matmul(key)).first;
  }
  const MatmulPrimitive& created = found->second;

  auto& engine = cpu_engine();
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, dnnl::memory(created.a, engine, const_cast<void*>(spec.a))},
      {DNNL_ARG_WEIGHTS, dnnl::memory(created.b, engine, const_cast<void*>(spec.b))},
      {DNNL_ARG_DST, dnnl::memory(created.c, engine, spec.c)},
  };
  if (spec.bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(created.bias, engine, const_cast<float*>(spec.bias)));
  dnnl::stream stream(engine);
  created.primitive.execute(stream, args);
  stream.wait();
}

}  // namespace fastvlm

namespace fastvlm {

struct PackedS8Weights::Layout {
  dnnl::memory::desc desc;
  dnnl::memory panels;  // owns the packed bytes
};

namespace {

void require_int8_compute(const char* what) {
  if (!kernels::int8_compute_available())
    throw Error(std::string(what) + ": int8 operands need AVX512-VNNI, which this CPU (or FASTVLM_ISA=" +
                kernels::kernel_level_name() + ") does not offer");
}

dnnl::memory::desc s8_rows(int64_t M, int64_t K, int64_t ld) {
  return dnnl::memory::desc({M, K}, dnnl::memory::data_type::s8, dnnl::memory::dims{ld, 1});
}

dnnl::memory::desc s32_rows(int64_t M, int64_t N, int64_t ld) {
  return dnnl::memory::desc({M, N}, dnnl::memory::data_type::s32, dnnl::memory::dims{ld, 1});
}

// The tower's tiles are 128 pixels. oneDNN picks the same weight layout for every M from 64 up, and the
// packed layout also serves smaller M (oneDNN's brgemm accepts it for any M).
constexpr int64_t kPackingRows = 128;

}  // namespace

PackedS8Weights::PackedS8Weights(const int8_t* codes, int64_t N, int64_t K) : N_(N), K_(K) {
  require_int8_compute("PackedS8Weights");
  if (N <= 0 || K <= 0)
    throw Error("PackedS8Weights: a weight matrix needs rows and columns, got " + std::to_string(N) + "x" +
                std::to_string(K));
  auto& engine = cpu_engine();
  const dnnl::memory::desc any({K, N}, dnnl::memory::data_type::s8, dnnl::memory::format_tag::any);
  const dnnl::matmul::primitive_desc chosen(
      dnnl::matmul::desc(s8_rows(kPackingRows, K, K), any, s32_rows(kPackingRows, N, N)), engine);
  layout_ = std::make_unique<Layout>(Layout{chosen.weights_desc(), dnnl::memory(chosen.weights_desc(), engine)});
  // B[N,K] row-major is the [K,N] matrix oneDNN multiplies with, stored column-major.
  const dnnl::memory::desc plain({K, N}, dnnl::memory::data_type::s8, dnnl::memory::dims{1, K});
  dnnl::memory source(plain, engine, const_cast<int8_t*>(codes));
  dnnl::stream stream(engine);
  dnnl::reorder(source, layout_->panels).execute(stream, source, layout_->panels);
  stream.wait();
}

PackedS8Weights::~PackedS8Weights() = default;

namespace {

// A created int8 product with the descriptors its arguments are wrapped in.
struct Int8MatmulPrimitive {
  dnnl::memory::desc a, c;
  dnnl::matmul primitive;
};

Int8MatmulPrimitive create_matmul_s8(const MatmulKey& key, const dnnl::memory::desc& packed) {
  Int8MatmulPrimitive created;
  created.a = s8_rows(key.M, key.K, key.lda);
  created.c = s32_rows(key.M, key.N, key.ldc);
  created.primitive =
      dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(created.a, packed, created.c), cpu_engine()));
  return created;
}

}  // namespace

void matmul_s8(const Int8MatmulSpec& spec) {
  if (spec.M <= 0) return;
  require_int8_compute("matmul_s8");
  const PackedS8Weights& b = *spec.b;
  // The packed layout is a function of (N, K) at the active level, so the shape is the whole key; the
  // key's types, transposition, bias and epilogue are fixed for int8 products.
  const MatmulKey key{spec.M, b.rows(), b.cols(), spec.lda, 0, spec.ldc, DType::F32, DType::F32, true, false,
                      Epilogue::None};
  thread_local std::unordered_map<MatmulKey, Int8MatmulPrimitive, MatmulKeyHash> primitives;
  auto found = primitives.find(key);
  if (found == primitives.end()) {
    if (primitives.size() >= 512) primitives.clear();
    found = primitives.emplace(key, create_matmul_s8(key, b.layout().desc)).first;
  }
  const Int8MatmulPrimitive& created = found->second;
  auto& engine = cpu_engine();
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, dnnl::memory(created.a, engine, const_cast<int8_t*>(spec.a))},
      {DNNL_ARG_WEIGHTS, b.layout().panels},
      {DNNL_ARG_DST, dnnl::memory(created.c, engine, spec.c)},
  };
  dnnl::stream stream(engine);
  created.primitive.execute(stream, args);
  stream.wait();
}

}  // namespace fastvlm
