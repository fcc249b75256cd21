#include "llm/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <regex>

#include "core/error.h"
#include "core/ops.h"
#include "kernels/activations.h"
#include "kernels/capabilities.h"
#include "kernels/gemv.h"
#include "kernels/softmax.h"
#include "llm/attention.h"

namespace fastvlm {

namespace {

// Decode feeds one row at a time: up to this many rows attention loops over the cache per head.
constexpr int kMaxRowsForDotLoops = 3;

}  // namespace

// Activations of one forward call, allocated once per call and sized by its number of positions.
struct Decoder::Workspace {
  int n;             // positions in this call
  int first;         // position of the first of them (= cache size before the call)
  std::vector<float> residual, normed, q, k, v, attended, projected, gate, up;
  std::vector<float> scores;                  // decode attention: [heads, context]
  AttentionScratch attention;                 // prefill attention
  std::vector<float> rotary_cos, rotary_sin;  // [n, head_dim / 2]

  Workspace(const TextConfig& c, int n, int first)
      : n(n),
        first(first),
        residual(size_t(n) * c.hidden_size),
        normed(size_t(n) * c.hidden_size),
        q(size_t(n) * c.num_attention_heads * c.head_dim),
        k(size_t(n) * c.num_key_value_heads * c.head_dim),
        v(size_t(n) * c.num_key_value_heads * c.head_dim),
        attended(size_t(n) * c.num_attention_heads * c.head_dim),
        projected(size_t(n) * c.hidden_size),
        gate(size_t(n) * c.intermediate_size),
        up(size_t(n) * c.intermediate_size),
        scores(n <= kMaxRowsForDotLoops ? size_t(c.num_attention_heads) * size_t(first + n) : 0),
        rotary_cos(size_t(n) * c.head_dim / 2),
        rotary_sin(size_t(n) * c.head_dim / 2) {}
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

std::unique_ptr<Decoder> Decoder::load(const Checkpoint& checkpoint, const TextConfig& c, Precision precision) {
  check_config(c);
  if (precision == Precision::Auto) throw Error("internal: Decoder::load needs a resolved precision, not Auto");
  const WeightType dense = precision == Precision::F32 ? WeightType::F32 : WeightType::BF16;
  std::unique_ptr<Decoder> model(new Decoder(c));
  const int hidden = c.hidden_size;
  const int q_dim = c.num_attention_heads * c.head_dim;
  const int kv_dim = c.num_key_value_heads * c.head_dim;

  // Attention follows the weights' precision: bf16 products where the linears use them, so that the f32
  // path stays the accuracy reference.
  model->attention_precision_ =
      dense == WeightType::BF16 && kernels::bf16_compute_available() ? Precision::Bf16 : Precision::F32;
  model->embed_tokens_ = Linear::load_dense(checkpoint, "model.embed_tokens", c.vocab_size, hidden, false, dense);
  model->layers_.reserve(c.num_hidden_layers);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    auto linear = [&](const char* name, int out, int in, bool bias) {
      return Linear::load(checkpoint, prefix + name, out, in, bias, dense);
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
                                          : Linear::load(checkpoint, "lm_head", c.vocab_size, hidden, false, dense);
  model->inverse_frequencies_ = rope_inverse_frequencies(c.rope, c.head_dim);
  return model;
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
  const int hidden = config_.hidden_size;
  const float* w = weight.data();
  for (int r = 0; r < rows; ++r) {
    const float* row = x + size_t(r) * hidden;
    double sum_of_squares = 0;
    for (int i = 0; i < hidden; ++i) sum_of_squares += double(row[i]) * row[i];
    const float inverse_rms = float(1.0 / std::sqrt(sum_of_squares / hidden + config_.rms_norm_eps));
    float* out = y + size_t(r) * hidden;
    for (int i = 0; i < hidden; ++i) out[i] = w[i] * (row[i] * inverse_rms);
  }
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

void Decoder::attention(int layer_index, const Layer& layer, Workspace& ws, KVCache& cache) const {
  const int n = ws.n;
  const int heads = config_.num_attention_heads;
  const int kv_heads = config_.num_key_value_heads;
  const int head_dim = config_.head_dim;

  rms_norm(ws.residual.data(), layer.input_norm, n, ws.normed.data());
  layer.q_proj.forward(ws.normed.data(), n, ws.q.data());
  layer.k_proj.forward(ws.normed.data(), n, ws.k.data());
  layer.v_proj.forward(ws.normed.data(), n, ws.v.data());
  apply_rotary(ws.q.data(), n, heads, ws);
  apply_rotary(ws.k.data(), n, kv_heads, ws);

  for (int kv = 0; kv < kv_heads; ++kv) {
    float* keys = cache.keys(layer_index, kv);
    float* values = cache.values(layer_index, kv);
    for (int r = 0; r < n; ++r) {
      const size_t source = (size_t(r) * kv_heads + kv) * head_dim;
      const size_t destination = size_t(ws.first + r) * head_dim;
      std::memcpy(keys + destination, ws.k.data() + source, sizeof(float) * head_dim);
      std::memcpy(values + destination, ws.v.data() + source, sizeof(float) * head_dim);
    }
  }

  if (n <= kMaxRowsForDotLoops) {
    attend_with_dot_loops(layer_index, ws, cache);
  } else {
    causal_attention(ws.q.data(), n, ws.first, heads, cache, layer_index, attention_precision_, ws.attention,
                     ws.attended.data());
  }

  layer.o_proj.forward(ws.attended.data(), n, ws.projected.data());
  add_inplace(ws.residual.data(), ws.projected.data(), ws.projected.size());
}

// Decode: a handful of queries against the cache, per head with vector dot products and axpys (a GEMM
// call per head would cost more in setup than the arithmetic). Heads are spread over the threads.
void Decoder::attend_with_dot_loops(int layer_index, Workspace& ws, const KVCache& cache) const {
  const int heads = config_.num_attention_heads;
  const int head_dim = config_.head_dim;
  const int queries_per_kv_head = heads / config_.num_key_value_heads;
  const int total = ws.first + ws.n;
  const float scale = 1.0f / std::sqrt(float(head_dim));
#pragma omp parallel for schedule(static) if (int64_t(heads) * total * head_dim >= 32768)
  for (int h = 0; h < heads; ++h) {
    const int kv = h / queries_per_kv_head;
    const float* keys = cache.keys(layer_index, kv);
    const float* values = cache.values(layer_index, kv);
    float* scores = ws.scores.data() + size_t(h) * total;
    for (int r = 0; r < ws.n; ++r) {
      const size_t offset = (size_t(r) * heads + h) * head_dim;
      const float* query = ws.q.data() + offset;
      const int visible = ws.first + r + 1;
      for (int p = 0; p < visible; ++p) scores[p] = scale * dot_f32(query, keys + size_t(p) * head_dim, head_dim);
      softmax_row(scores, visible);
      float* out = ws.attended.data() + offset;
      std::fill(out, out + head_dim, 0.0f);
      for (int p = 0; p < visible; ++p) axpy_f32(scores[p], values + size_t(p) * head_dim, out, head_dim);
    }
  }
}

void Decoder::mlp(const Layer& layer, Workspace& ws) const {
  const int n = ws.n;
  rms_norm(ws.residual.data(), layer.post_attention_norm, n, ws.normed.data());
  layer.gate_proj.forward(ws.normed.data(), n, ws.gate.data());
  layer.up_proj.forward(ws.normed.data(), n, ws.up.data());
  silu_multiply(ws.gate.data(), ws.up.data(), int64_t(ws.gate.size()));
  layer.down_proj.forward(ws.gate.data(), n, ws.projected.data());
  add_inplace(ws.residual.data(), ws.projected.data(), ws.projected.size());
}

std::vector<float> Decoder::forward(const float* embeddings, int n, KVCache& cache,
                                  const HiddenStateObserver& observer) const {
  if (cache.num_layers() != config_.num_hidden_layers || cache.num_kv_heads() != config_.num_key_value_heads ||
      cache.head_dim() != config_.head_dim) {
    throw Error("KV cache was made for " + std::to_string(cache.num_layers()) + " layers x " +
                std::to_string(cache.num_kv_heads()) + " KV heads x head_dim " + std::to_string(cache.head_dim()) +
                ", the model has " + std::to_string(config_.num_hidden_layers) + " x " +
                std::to_string(config_.num_key_value_heads) + " x " + std::to_string(config_.head_dim));
  }
  if (n < 1) throw Error("decoder forward: needs at least one position, got " + std::to_string(n));
  if (n > cache.capacity() - cache.size()) {
    throw Error("context overflow: " + std::to_string(cache.size()) + " positions in the cache + " +
                std::to_string(n) + " new ones exceed the context size " + std::to_string(cache.capacity()));
  }

  const int hidden = config_.hidden_size;
  Workspace ws(config_, n, cache.size());
  std::memcpy(ws.residual.data(), embeddings, sizeof(float) * ws.residual.size());

  const int half = config_.head_dim / 2;
  for (int r = 0; r < n; ++r) {
    const double position = ws.first + r;
    for (int j = 0; j < half; ++j) {
      const double angle = position * inverse_frequencies_[j];
      ws.rotary_cos[size_t(r) * half + j] = float(std::cos(angle));
      ws.rotary_sin[size_t(r) * half + j] = float(std::sin(angle));
    }
  }

  for (int i = 0; i < int(layers_.size()); ++i) {
    attention(i, layers_[i], ws, cache);
    mlp(layers_[i], ws);
    if (observer) observer("llm.hidden." + std::to_string(i), ws.residual.data(), n, hidden);
  }
  // Keys and values of every layer are written; only now do the new positions become part of the context.
  cache.commit(n);

  if (observer) {
    rms_norm(ws.residual.data(), final_norm_, n, ws.normed.data());
    observer("llm.final_norm", ws.normed.data(), n, hidden);
  }
  // Only the last position predicts the next token: normalise it alone and run lm_head on one row.
  std::vector<float> last_normed(hidden);
  rms_norm(ws.residual.data() + size_t(n - 1) * hidden, final_norm_, 1, last_normed.data());
  std::vector<float> logits(config_.vocab_size);
  lm_head_.forward(last_normed.data(), 1, logits.data());
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
