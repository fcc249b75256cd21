#include "core/gemm.h"

#include <oneapi/dnnl/dnnl.hpp>

#include "core/error.h"

namespace fastvlm {
namespace {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

}  // namespace

void gemm_f32(bool b_transposed, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
              const float* B, int64_t ldb, float* C, int64_t ldc, const float* bias) {
  using dt = dnnl::memory::data_type;
  if (M <= 0 || N <= 0) return;
  dnnl::memory::desc a_md({M, K}, dt::f32, {lda, 1});
  // B as a logical [K,N] matrix: transposed storage means element (k,n) sits at n*ldb + k.
  dnnl::memory::desc b_md({K, N}, dt::f32, b_transposed ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1});
  dnnl::memory::desc c_md({M, N}, dt::f32, {ldc, 1});
  dnnl::memory::desc bias_md({1, N}, dt::f32, {N, 1});

  auto& engine = cpu_engine();
  // oneDNN keeps its own primitive cache keyed by the descriptors, so re-creating is cheap.
  auto pd = bias ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, bias_md, c_md), engine)
                 : dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, c_md), engine);
  dnnl::matmul prim(pd);
  dnnl::stream stream(engine);
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, dnnl::memory(a_md, engine, const_cast<float*>(A))},
      {DNNL_ARG_WEIGHTS, dnnl::memory(b_md, engine, const_cast<float*>(B))},
      {DNNL_ARG_DST, dnnl::memory(c_md, engine, C)},
  };
  if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(bias_md, engine, const_cast<float*>(bias)));
  prim.execute(stream, args);
  stream.wait();
}

}  // namespace fastvlm
