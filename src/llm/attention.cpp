#include "llm/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/error.h"
#include "kernels/activations.h"
#include "kernels/capabilities.h"
#include "kernels/gemm.h"
#include "kernels/softmax.h"

namespace fastvlm {

namespace {

// Rows (query position x head of the group) per tile and keys per tile. A tile's scores
// (256 x 256 floats), probabilities and output rows (256 x head_dim) stay well inside a 1 MiB L2, while a
// tile is still tens of MFLOP, far above the cost of one oneDNN call.
constexpr int kTileRows = 256;
constexpr int kKeyTile = 256;
// The last key tile of a query block is trimmed to the visible keys rounded up to this many, which wastes
// little work near the diagonal and bounds the number of distinct product shapes (oneDNN primitives).
constexpr int kKeyGranule = 64;

int round_up(int value, int multiple) { return (value + multiple - 1) / multiple * multiple; }

void copy_rows(const float* source, int64_t count, float* destination) {
  std::memcpy(destination, source, sizeof(float) * count);
}
void copy_rows(const float* source, int64_t count, uint16_t* destination) {
  f32_to_bf16_simd(source, destination, count);
}

// The operand copies a run reads, in element type T (float or bf16 bits).
template <typename T>
struct Operands {
  const T* queries;  // [kv_heads][n][group][head_dim]: the rows of one KV head's tiles are contiguous
  const T* keys;     // [kv_heads][padded][head_dim], zero past the context
  const T* values;   // same
};

// Lays out the operands for the tiles: the queries of the heads sharing a KV head side by side per
// position, and the cached keys and values of the whole context, zero-padded to `padded` rows.
template <typename T>
Operands<T> prepare_operands(const float* queries, int n, int heads, int context, int padded, const KVCache& cache,
                             int layer, std::vector<T>& query_copy, std::vector<T>& key_copy,
                             std::vector<T>& value_copy) {
  const int kv_heads = cache.num_kv_heads();
  const int head_dim = cache.head_dim();
  const int group = heads / kv_heads;
  query_copy.resize(size_t(n) * heads * head_dim);
  key_copy.assign(size_t(kv_heads) * padded * head_dim, T(0));
  value_copy.assign(size_t(kv_heads) * padded * head_dim, T(0));
#pragma omp parallel for schedule(static)
  for (int r = 0; r < n; ++r) {
    for (int kv = 0; kv < kv_heads; ++kv) {
      copy_rows(queries + (size_t(r) * heads + size_t(kv) * group) * head_dim, int64_t(group) * head_dim,
                query_copy.data() + (size_t(kv) * n + r) * group * head_dim);
    }
  }
  for (int kv = 0; kv < kv_heads; ++kv) {
    const size_t offset = size_t(kv) * padded * head_dim;
    copy_rows(cache.keys(layer, kv), int64_t(context) * head_dim, key_copy.data() + offset);
    copy_rows(cache.values(layer, kv), int64_t(context) * head_dim, value_copy.data() + offset);
  }
  return {query_copy.data(), key_copy.data(), value_copy.data()};
}

template <typename T>
void attend_tiles(const Operands<T>& operands, int n, int first, int heads, int kv_heads, int head_dim, int padded,
                  float* attended) {
  const int group = heads / kv_heads;
  const int block_positions = std::max(1, kTileRows / group);
  const int blocks = (n + block_positions - 1) / block_positions;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const DType type = std::is_same_v<T, float> ? DType::F32 : DType::BF16;
  const int tile_rows = block_positions * group;

#pragma omp parallel
  {
    // Per-thread tile buffers: scores, probabilities, output accumulator and the streaming-softmax state.
    std::vector<float> scores(size_t(tile_rows) * kKeyTile);
    std::vector<T> probabilities(size_t(tile_rows) * kKeyTile);
    std::vector<float> output(size_t(tile_rows) * head_dim);
    std::vector<float> row_max(tile_rows), row_sum(tile_rows);

    // Work items from the last query block down: later blocks see more keys, so the longest run first
    // and the short ones fill the gaps at the end.
#pragma omp for schedule(dynamic)
    for (int item = 0; item < blocks * kv_heads; ++item) {
      const int block = blocks - 1 - item / kv_heads;
      const int kv = item % kv_heads;
      const int block_start = block * block_positions;
      const int positions = std::min(block_positions, n - block_start);
      const int rows = positions * group;
      const int visible_end = first + block_start + positions;  // keys any row of the block sees
      const T* query_rows = operands.queries + (size_t(kv) * n + block_start) * group * head_dim;
      const T* keys = operands.keys + size_t(kv) * padded * head_dim;
      const T* values = operands.values + size_t(kv) * padded * head_dim;

      std::fill(output.begin(), output.begin() + size_t(rows) * head_dim, 0.0f);
      std::fill(row_max.begin(), row_max.end(), -std::numeric_limits<float>::infinity());
      std::fill(row_sum.begin(), row_sum.end(), 0.0f);
      for (int key_start = 0; key_start < visible_end; key_start += kKeyTile) {
        const int width = std::min(kKeyTile, round_up(visible_end - key_start, kKeyGranule));
        matmul({.M = rows, .N = width, .K = head_dim, .ab_type = type, .a = query_rows, .lda = head_dim,
                .b = keys + size_t(key_start) * head_dim, .ldb = head_dim, .b_transposed = true,
                .c = scores.data(), .ldc = kKeyTile});
        for (int row = 0; row < rows; ++row) {
          // Row (position r of the block, head g of the group) sees keys 0 .. first + block_start + r.
          const int position = first + block_start + row / group;
          const float correction = online_softmax_tile(
              scores.data() + size_t(row) * kKeyTile, position + 1 - key_start, width, scale, row_max[row],
              row_sum[row], probabilities.data() + size_t(row) * kKeyTile);
          if (correction != 1.0f) {
            float* out = output.data() + size_t(row) * head_dim;
            for (int d = 0; d < head_dim; ++d) out[d] *= correction;
          }
        }
        matmul({.M = rows, .N = head_dim, .K = width, .ab_type = type, .a = probabilities.data(), .lda = kKeyTile,
                .b = values + size_t(key_start) * head_dim, .ldb = head_dim, .b_transposed = false,
                .c = output.data(), .ldc = head_dim, .epilogue = Epilogue::AddToOutput});
      }
      for (int row = 0; row < rows; ++row) {
        const int r = block_start + row / group;
        const int h = kv * group + row % group;
        const float inverse_sum = 1.0f / row_sum[row];
        const float* out = output.data() + size_t(row) * head_dim;
        float* destination = attended + (size_t(r) * heads + h) * head_dim;
        for (int d = 0; d < head_dim; ++d) destination[d] = out[d] * inverse_sum;
      }
    }
  }
}

}  // namespace

void causal_attention(const float* queries, int n, int first, int heads, const KVCache& cache, int layer,
                      Precision precision, AttentionScratch& scratch, float* attended) {
  const int kv_heads = cache.num_kv_heads();
  const int head_dim = cache.head_dim();
  if (n < 1 || first < 0 || first + n > cache.capacity() || layer < 0 || layer >= cache.num_layers() ||
      heads < kv_heads || heads % kv_heads != 0) {
    throw Error("causal_attention: " + std::to_string(n) + " queries at position " + std::to_string(first) +
                " with " + std::to_string(heads) + " heads do not fit a KV cache of " +
                std::to_string(cache.capacity()) + " positions, " + std::to_string(kv_heads) + " KV heads, layer " +
                std::to_string(layer) + " of " + std::to_string(cache.num_layers()));
  }
  if (precision != Precision::F32 && precision != Precision::Bf16)
    throw Error("internal: causal_attention computes in f32 or bf16");
  if (precision == Precision::Bf16 && !kernels::bf16_compute_available()) {
    throw Error("causal_attention: bfloat16 attention needs AVX512-BF16, which this CPU (or FASTVLM_ISA=" +
                kernels::kernel_level_name() + ") does not offer");
  }
  const int context = first + n;
  const int padded = round_up(context, kKeyGranule);
  if (precision == Precision::Bf16) {
    const auto operands = prepare_operands(queries, n, heads, context, padded, cache, layer, scratch.queries_bf16,
                                           scratch.keys_bf16, scratch.values_bf16);
    attend_tiles(operands, n, first, heads, kv_heads, head_dim, padded, attended);
  } else {
    const auto operands = prepare_operands(queries, n, heads, context, padded, cache, layer, scratch.queries_f32,
                                           scratch.keys_f32, scratch.values_f32);
    attend_tiles(operands, n, first, heads, kv_heads, head_dim, padded, attended);
  }
}

}  // namespace fastvlm
