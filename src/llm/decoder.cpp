#include "llm/decoder.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <regex>

#include "core/error.h"
#include "core/ops.h"
#include "kernels/activations.h"
#include "kernels/capabilities.h"
#include "kernels/gemv.h"
#include "kernels/norms.h"
#include "kernels/softmax.h"
#include "llm/attention.h"

namespace fastvlm {

namespace {

// Decode feeds one row at a time: up to this many rows attention loops over the cache per head.
constexpr int kMaxRowsForDotLoops = 3;

}  // namespace

// Activations of one forward call, allocated once per call and sized by its number of rows. A row is one
// position of one sequence: n consecutive positions of one cache (prefill, decode), or the next position(s)
// of each of several sequences (batched decode, a prefill chunk riding along).
struct Decoder::Workspace {
  int n;                        // rows in this call
  std::vector<KVCache*> cache;  // [n] the cache each row's keys and values go to
  std::vector<int> position;    // [n] each row's position in its sequence
  bool one_sequence;            // every row of one cache, at consecutive positions
  std::vector<float> residual, normed, q, k, v, attended, projected, gate, up;
  std::vector<float> scores;                  // decode attention: [n, heads, context]
  AttentionScratch attention;                 // prefill attention
  std::vector<float> rotary_cos, rotary_sin;  // [n, head_dim / 2]

  Workspace(const TextConfig& c, std::vector<KVCache*> caches, std::vector<int> positions, bool one_sequence)
      : n(int(caches.size())),
        cache(std::move(caches)),
        position(std::move(positions)),
        one_sequence(one_sequence),
        residual(size_t(n) * c.hidden_size),
        normed(size_t(n) * c.hidden_size),
        q(size_t(n) * c.num_attention_heads * c.head_dim),
        k(size_t(n) * c.num_key_value_heads * c.head_dim),
        v(size_t(n) * c.num_key_value_heads * c.head_dim),
        attended(size_t(n) * c.num_attention_heads * c.head_dim),
        projected(size_t(n) * c.hidden_size),
        gate(size_t(n) * c.intermediate_size),
        up(size_t(n) * c.intermediate_size),
        scores(uses_dot_loops() ? size_t(n) * c.num_attention_heads * size_t(longest_context()) : 0),
        rotary_cos(size_t(n) * c.head_dim / 2),
        rotary_sin(size_t(n) * c.head_dim / 2) {}

  // A few positions, or positions of different sequences, attend with per-head dot loops; a long run of one
  // sequence with the tiled causal kernel.
  bool uses_dot_loops() const { return !one_sequence || n <= kMaxRowsForDotLoops; }
  int longest_context() const { return *std::max_element(position.begin(), position.end()) + 1; }
};

namespace {

void check_config(const TextConfig& c) {
  auto positive = [](int value, const char* key) {
    if (value <= 0) throw Error(std::string("config.json: ") + key + " must be positive, got " + std::to_string(value));
  };
  positive(c.hidden_size, "hidden_size");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.num_hidden_layers, "num_hidden_layers");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.num_key_value_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  positive(c.vocab_size, "vocab_size");
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    throw Error("config.json: num_attention_heads (" + std::to_string(c.num_attention_heads) +
                ") must be a multiple of num_key_value_heads (" + std::to_string(c.num_key_value_heads) + ")");
  }
  if (c.head_dim % 2 != 0) {
    throw Error("config.json: head_dim " + std::to_string(c.head_dim) + " must be even for rotary embeddings");
  }
  if (!(c.rope.theta > 0) || !(c.rms_norm_eps > 0)) {
    throw Error("config.json: rope_theta and rms_norm_eps must be positive");
  }
}

void add_inplace(float* accumulator, const float* addend, size_t count) {
  for (size_t i = 0; i < count; ++i) accumulator[i] += addend[i];
}

}  // namespace

std::unique_ptr<Decoder> Decoder::load(const Checkpoint& checkpoint, const TextConfig& c, Precision precision,
                                       std::optional<WeightType> quantize_linears) {
  check_config(c);
  if (precision == Precision::Auto) throw Error("internal: Decoder::load needs a resolved precision, not Auto");
  if (quantize_linears && *quantize_linears != WeightType::Q8_0 && *quantize_linears != WeightType::Q4_0)
    throw Error("internal: the decoder's linears are quantised at load to q8_0 or q4_0, not " +
                std::string(weight_type_name(*quantize_linears)));
  const WeightType dense = precision == Precision::F32 ? WeightType::F32 : WeightType::BF16;
  const WeightType linears = quantize_linears.value_or(dense);
  std::unique_ptr<Decoder> model(new Decoder(c));
  const int hidden = c.hidden_size;
  const int q_dim = c.num_attention_heads * c.head_dim;
  const int kv_dim = c.num_key_value_heads * c.head_dim;

  // Attention follows the weights' precision: bf16 products where the linears use them, so that the f32
  // path stays the accuracy reference.
  model->attention_precision_ =
      dense == WeightType::BF16 && kernels::bf16_compute_available() ? Precision::Bf16 : Precision::F32;
  // An untied embedding is only looked up a row at a time: stored bf16, it stays in the mapping and each row
  // is widened on lookup, exactly the floats a float32 copy would hold, without that copy (545 MB at 0.5B).
  const bool stored_bf16 = checkpoint.tensor("model.embed_tokens.weight", {c.vocab_size, hidden}).dtype == DType::BF16;
  const WeightType embedding = !c.tie_word_embeddings && stored_bf16 ? WeightType::BF16 : dense;
  model->embed_tokens_ = Linear::load_dense(checkpoint, "model.embed_tokens", c.vocab_size, hidden, false, embedding);
  // Block-quantised linears keep their codes on huge pages, which all the layers' Linears share.
  const auto arena = std::make_shared<WeightArena>();
  model->layers_.reserve(c.num_hidden_layers);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    auto linear = [&](const char* name, int out, int in, bool bias) {
      return Linear::load(checkpoint, prefix + name, out, in, bias, linears, arena);
    };
    Layer layer;
    layer.input_norm = checkpoint.load_f32(prefix + "input_layernorm.weight", {hidden});
    layer.q_proj = linear("self_attn.q_proj", q_dim, hidden, c.qkv_bias);
    layer.k_proj = linear("self_attn.k_proj", kv_dim, hidden, c.qkv_bias);
    layer.v_proj = linear("self_attn.v_proj", kv_dim, hidden, c.qkv_bias);
    layer.o_proj = linear("self_attn.o_proj", hidden, q_dim, c.o_bias);
    layer.post_attention_norm = checkpoint.load_f32(prefix + "post_attention_layernorm.weight", {hidden});
    layer.gate_proj = linear("mlp.gate_proj", c.intermediate_size, hidden, c.mlp_bias);
    layer.up_proj = linear("mlp.up_proj", c.intermediate_size, hidden, c.mlp_bias);
    layer.down_proj = linear("mlp.down_proj", hidden, c.intermediate_size, c.mlp_bias);
    model->layers_.push_back(std::move(layer));
  }
  model->final_norm_ = checkpoint.load_f32("model.norm.weight", {hidden});
  // A tied head uses the embedding, even where a (redundant) lm_head.weight is stored.
  model->lm_head_ = c.tie_word_embeddings ? model->embed_tokens_
                                          : Linear::load(checkpoint, "lm_head", c.vocab_size, hidden, false, linears, arena);
  model->inverse_frequencies_ = rope_inverse_frequencies(c.rope, c.head_dim);
  return model;
}

int64_t Decoder::decode_weight_bytes() const {
  int64_t bytes = lm_head_.weight_bytes() + embed_tokens_.weight_bytes() / config_.vocab_size;
  for (const Layer& layer : layers_)
    for (const Linear* linear : {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj, &layer.gate_proj,
                                 &layer.up_proj, &layer.down_proj})
      bytes += linear->weight_bytes();
  return bytes;
}

void Decoder::embed(std::span<const int32_t> ids, float* out) const {
  const int hidden = config_.hidden_size;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= config_.vocab_size) {
      throw Error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(config_.vocab_size) + ")");
    }
  }
  for (size_t i = 0; i < ids.size(); ++i) embed_tokens_.row(ids[i], out + i * hidden);
}

void Decoder::rms_norm(const float* x, const Tensor& weight, int rows, float* y) const {
  rms_norm_rows(x, weight.data(), rows, config_.hidden_size, config_.rms_norm_eps, y);
}

// Rotate-half rotary embedding: with h = head_dim/2, the pairs (x[j], x[j+h]) of every head are rotated by
// the angle position·frequency[j].
void Decoder::apply_rotary(float* x, int rows, int heads, const Workspace& ws) const {
  const int head_dim = config_.head_dim;
  const int half = head_dim / 2;
  for (int r = 0; r < rows; ++r) {
    const float* cos_row = ws.rotary_cos.data() + size_t(r) * half;
    const float* sin_row = ws.rotary_sin.data() + size_t(r) * half;
    for (int h = 0; h < heads; ++h) {
      float* head = x + (size_t(r) * heads + h) * head_dim;
      for (int j = 0; j < half; ++j) {
        const float first = head[j];
        const float second = head[j + half];
        head[j] = first * cos_row[j] - second * sin_row[j];
        head[j + half] = second * cos_row[j] + first * sin_row[j];
      }
    }
  }
}

void Decoder::attention(int layer_index, const Layer& layer, Workspace& ws) const {
  const int n = ws.n;
  const int heads = config_.num_attention_heads;
  const int kv_heads = config_.num_key_value_heads;
  const int head_dim = config_.head_dim;

  rms_norm(ws.residual.data(), layer.input_norm, n, ws.normed.data());
  const Linear* projections[] = {&layer.q_proj, &layer.k_proj, &layer.v_proj};
  float* const projected[] = {ws.q.data(), ws.k.data(), ws.v.data()};
  Linear::forward_shared_input(ws.normed.data(), n, projections, projected);
  apply_rotary(ws.q.data(), n, heads, ws);
  apply_rotary(ws.k.data(), n, kv_heads, ws);

  for (int r = 0; r < n; ++r) {
    for (int kv = 0; kv < kv_heads; ++kv) {
      const size_t source = (size_t(r) * kv_heads + kv) * head_dim;
      const size_t destination = size_t(ws.position[r]) * head_dim;
      std::memcpy(ws.cache[r]->keys(layer_index, kv) + destination, ws.k.data() + source, sizeof(float) * head_dim);
      std::memcpy(ws.cache[r]->values(layer_index, kv) + destination, ws.v.data() + source, sizeof(float) * head_dim);
    }
  }

  if (ws.uses_dot_loops()) {
    attend_with_dot_loops(layer_index, ws);
  } else {
    causal_attention(ws.q.data(), n, ws.position[0], heads, *ws.cache[0], layer_index, attention_precision_,
                     ws.attention, ws.attended.data());
  }

  layer.o_proj.forward(ws.attended.data(), n, ws.projected.data());
  add_inplace(ws.residual.data(), ws.projected.data(), ws.projected.size());
}

// Decode: a handful of queries, each against its own sequence's cache, per head with vector kernels (a
// GEMM call per head would cost more in setup than the arithmetic). A task is the query heads of one row
// that share a KV head, which the kernels take together so that each cached key and value is read once for
// them; a KV head's query heads are split into as many tasks as it takes to give every thread one.
void Decoder::attend_with_dot_loops(int layer_index, Workspace& ws) const {
  const int heads = config_.num_attention_heads;
  const int kv_heads = config_.num_key_value_heads;
  const int head_dim = config_.head_dim;
  const int queries_per_kv_head = heads / kv_heads;
  const int context = ws.longest_context();
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const int kv_pairs = ws.n * kv_heads;
  const int splits = std::min(queries_per_kv_head, (omp_get_max_threads() + kv_pairs - 1) / kv_pairs);
  const int heads_per_task = (queries_per_kv_head + splits - 1) / splits;
  const int tasks = kv_pairs * splits;
#pragma omp parallel for schedule(static) if (int64_t(ws.n) * heads * context * head_dim >= 32768)
  for (int task = 0; task < tasks; ++task) {
    const int r = task / (kv_heads * splits), kv = task / splits % kv_heads, split = task % splits;
    const int first_head = kv * queries_per_kv_head + split * heads_per_task;
    const int count = std::min(heads_per_task, queries_per_kv_head - split * heads_per_task);
    if (count <= 0) continue;
    const int visible = ws.position[r] + 1;
    const size_t first_pair = size_t(r) * heads + first_head;
    float* scores = ws.scores.data() + first_pair * context;
    const size_t offset = first_pair * head_dim;
    attention_scores_f32(ws.q.data() + offset, count, ws.cache[r]->keys(layer_index, kv), visible, head_dim, scale,
                         scores, context);
    for (int j = 0; j < count; ++j) softmax_row(scores + size_t(j) * context, visible);
    attention_values_f32(scores, context, count, ws.cache[r]->values(layer_index, kv), visible, head_dim,
                         ws.attended.data() + offset);
  }
}

void Decoder::mlp(const Layer& layer, Workspace& ws) const {
  const int n = ws.n;
  rms_norm(ws.residual.data(), layer.post_attention_norm, n, ws.normed.data());
  const Linear* projections[] = {&layer.gate_proj, &layer.up_proj};
  float* const projected[] = {ws.gate.data(), ws.up.data()};
  Linear::forward_shared_input(ws.normed.data(), n, projections, projected);
  silu_multiply(ws.gate.data(), ws.up.data(), int64_t(ws.gate.size()));
  layer.down_proj.forward(ws.gate.data(), n, ws.projected.data());
  add_inplace(ws.residual.data(), ws.projected.data(), ws.projected.size());
}

void Decoder::check_fits(const KVCache& cache, int n) const {
  if (cache.num_layers() != config_.num_hidden_layers || cache.num_kv_heads() != config_.num_key_value_heads ||
      cache.head_dim() != config_.head_dim) {
    throw Error("KV cache was made for " + std::to_string(cache.num_layers()) + " layers x " +
                std::to_string(cache.num_kv_heads()) + " KV heads x head_dim " + std::to_string(cache.head_dim()) +
                ", the model has " + std::to_string(config_.num_hidden_layers) + " x " +
                std::to_string(config_.num_key_value_heads) + " x " + std::to_string(config_.head_dim));
  }
  if (n > cache.capacity() - cache.size()) {
    throw Error("context overflow: " + std::to_string(cache.size()) + " positions in the cache + " +
                std::to_string(n) + " new ones exceed the context size " + std::to_string(cache.capacity()));
  }
}

std::vector<float> Decoder::forward(const float* embeddings, int n, KVCache& cache,
                                    const HiddenStateObserver& observer) const {
  if (n < 1) throw Error("decoder forward: needs at least one position, got " + std::to_string(n));
  check_fits(cache, n);
  std::vector<int> positions(n);
  for (int r = 0; r < n; ++r) positions[r] = cache.size() + r;
  Workspace ws(config_, std::vector<KVCache*>(n, &cache), std::move(positions), true);
  run_layers(embeddings, ws, observer);
  cache.commit(n);
  // Only the last position predicts the next token: lm_head on that row alone.
  const int last = n - 1;
  return logits_of_rows(ws, std::span(&last, 1));
}

std::vector<float> Decoder::forward_batch(const float* embeddings, std::span<KVCache* const> caches,
                                          std::span<const int> counts) const {
  if (caches.empty()) throw Error("decoder forward_batch: needs at least one sequence");
  if (!counts.empty() && counts.size() != caches.size())
    throw Error("decoder forward_batch: " + std::to_string(counts.size()) + " position counts for " +
                std::to_string(caches.size()) + " sequences");
  std::vector<KVCache*> row_caches;
  std::vector<int> positions, last_rows;
  for (size_t b = 0; b < caches.size(); ++b) {
    KVCache* cache = caches[b];
    const int count = counts.empty() ? 1 : counts[b];
    if (count < 1)
      throw Error("decoder forward_batch: sequence " + std::to_string(b) + " advances by " + std::to_string(count) +
                  " positions, needs at least one");
    check_fits(*cache, count);
    if (std::count(caches.begin(), caches.end(), cache) != 1)
      throw Error("decoder forward_batch: a KV cache appears twice in one batch");
    // A sequence's rows attend causally among themselves: each row's keys are in the cache before any row
    // attends, and a row sees the positions up to its own.
    for (int i = 0; i < count; ++i) {
      row_caches.push_back(cache);
      positions.push_back(cache->size() + i);
    }
    last_rows.push_back(int(positions.size()) - 1);
  }
  Workspace ws(config_, std::move(row_caches), std::move(positions), false);
  run_layers(embeddings, ws, {});
  for (size_t b = 0; b < caches.size(); ++b) caches[b]->commit(counts.empty() ? 1 : counts[b]);
  return logits_of_rows(ws, last_rows);
}

void Decoder::run_layers(const float* embeddings, Workspace& ws, const HiddenStateObserver& observer) const {
  const int n = ws.n, hidden = config_.hidden_size, half = config_.head_dim / 2;
  std::memcpy(ws.residual.data(), embeddings, sizeof(float) * ws.residual.size());
  for (int r = 0; r < n; ++r) {
    const double position = ws.position[r];
    for (int j = 0; j < half; ++j) {
      const double angle = position * inverse_frequencies_[j];
      ws.rotary_cos[size_t(r) * half + j] = float(std::cos(angle));
      ws.rotary_sin[size_t(r) * half + j] = float(std::sin(angle));
    }
  }
  // Keys and values of every layer are written past each cache's size; the caller commits them after.
  for (int i = 0; i < int(layers_.size()); ++i) {
    attention(i, layers_[i], ws);
    mlp(layers_[i], ws);
    if (observer) observer("llm.hidden." + std::to_string(i), ws.residual.data(), n, hidden);
  }
  if (observer) {
    rms_norm(ws.residual.data(), final_norm_, n, ws.normed.data());
    observer("llm.final_norm", ws.normed.data(), n, hidden);
  }
}

std::vector<float> Decoder::logits_of_rows(const Workspace& ws, std::span<const int> rows) const {
  const int hidden = config_.hidden_size, count = int(rows.size());
  std::vector<float> normed(size_t(count) * hidden);
  for (int i = 0; i < count; ++i)
    rms_norm(ws.residual.data() + size_t(rows[i]) * hidden, final_norm_, 1, normed.data() + size_t(i) * hidden);
  std::vector<float> logits(size_t(count) * config_.vocab_size);
  lm_head_.forward(normed.data(), count, logits.data());
  return logits;
}

bool is_decoder_linear_weight(const std::string& name) {
  static const std::regex pattern(
      R"(model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.weight|lm_head\.weight)");
  return std::regex_match(name, pattern);
}

int64_t prefill_macs(const TextConfig& config, int64_t positions, int64_t cached) {
  const int64_t h = config.hidden_size, q = int64_t(config.num_attention_heads) * config.head_dim;
  const int64_t kv = int64_t(config.num_key_value_heads) * config.head_dim;
  const int64_t linears = h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size;
  // Each new position attends to the cache and, causally, to the new positions before it.
  const int64_t attended = positions * cached + positions * positions / 2;
  return config.num_hidden_layers * (positions * linears + 2 * attended * q) + h * config.vocab_size;
}

}  // namespace fastvlm
