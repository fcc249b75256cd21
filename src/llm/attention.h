#pragma once
// Causal grouped-query attention of a chunk of new positions (prefill) against the KV cache, computed in
// tiles with a streaming ("online") softmax, flash-attention style:
//  - the score matrix never exists whole: a tile of [query rows x key tile] scores lives in L2, is
//    turned into probabilities and multiplied into the output before the next tile, so memory traffic
//    stays linear in the context instead of quadratic;
//  - key tiles entirely above the causal diagonal are never computed;
//  - the query heads that share one KV head are stacked into the rows of one product, so each K/V tile
//    is read once per group of heads;
//  - (KV head, query block) pairs are spread over the threads, the longest (latest) blocks first.
// The products run on oneDNN, single-threaded per tile, in float32 (Precision::F32, the accuracy
// reference: results differ from a plain softmax only by rounding) or (Precision::Bf16, which needs
// kernels::bf16_compute_available()) with bfloat16 q, k, v and probabilities accumulated in float32.
#include <cstdint>
#include <vector>

#include "fastvlm/precision.hpp"
#include "llm/kv_cache.h"

namespace fastvlm {

// Copies of q, k, v in the layout and type the tiles read, kept between calls so that the buffers of a
// long prompt are allocated (and page-faulted) once per forward call rather than once per layer.
struct AttentionScratch {
  std::vector<float> queries_f32, keys_f32, values_f32;
  std::vector<uint16_t> queries_bf16, keys_bf16, values_bf16;
};

// attended[n, heads * head_dim] = softmax(q·kᵀ / sqrt(head_dim)) · v for the `n` queries
// `queries` [n, heads * head_dim] (rotary applied) at positions first .. first+n-1, where the query at
// position p sees the cached positions 0 .. p of layer `layer` (rows [0, first+n) of the cache must be
// written; cache.size() is not consulted). Query head h reads KV head h / (heads / num_kv_heads).
// Threads with OpenMP. Throws fastvlm::Error when the arguments do not fit the cache, Bf16 is asked
// for below AVX-512, or `precision` is neither F32 nor Bf16.
void causal_attention(const float* queries, int n, int first, int heads, const KVCache& cache, int layer,
                      Precision precision, AttentionScratch& scratch, float* attended);

}  // namespace fastvlm
