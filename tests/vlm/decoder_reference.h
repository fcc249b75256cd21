#pragma once
// An independent float64 reference of Hugging Face's Qwen2ForCausalLM and LlamaForCausalLM forward
// pass, written from the transformers modelling code's semantics (not from this repository's engine),
// so that the engine can be checked on checkpoint shapes for which no golden file exists. Plain loops,
// one position at a time with a K/V cache (the same as full causal attention over the prompt); the sizes
// the tests use are tiny, so clarity wins over speed everywhere except the lm_head row loop.
//
// Semantics followed (transformers modeling_qwen2.py / modeling_llama.py, modeling_rope_utils.py):
//  - x = embed_tokens[id]; per layer: h = x + o_proj(attn(rmsnorm(x))); x = h + down(silu(gate(n)) * up(n))
//    with n = rmsnorm(h); then the final rmsnorm and lm_head (embed_tokens when tied and lm_head absent).
//  - RMSNorm: x * 1/sqrt(mean(x^2) + eps) * weight.
//  - Biases: Qwen2 has q/k/v biases and none on o_proj or the MLP; Llama has q/k/v/o biases iff
//    `attention_bias` and gate/up/down biases iff `mlp_bias`.
//  - head_dim: config `head_dim` when present, else hidden_size / num_attention_heads.
//  - num_key_value_heads defaults to num_attention_heads; query head h reads KV head h / (heads/kv_heads).
//  - RoPE, rotate-half form over the whole head: inv[i] = 1/theta^(2i/head_dim), i < head_dim/2;
//    angle = position * inv[i]; out[i] = x[i]cos - x[i+D/2]sin, out[i+D/2] = x[i+D/2]cos + x[i]sin.
//    rope_scaling: none/"default"; "linear" divides every inv by factor; "llama3" (see the tiny-llama
//    fixture README). theta and the scaling come from `rope_parameters` (transformers >= 5) when the
//    config has it, else from `rope_theta` (default 10000) and `rope_scaling`.
//  - Attention: softmax over positions <= the query's of q.k / sqrt(head_dim).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/safetensors.h"

namespace fastvlm::reference {

struct DecoderConfig {
  std::string model_type;  // "qwen2" or "llama"
  int hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  double rms_eps = 1e-6;
  bool qkv_bias = false, o_bias = false, mlp_bias = false, tie_word_embeddings = false;
  double rope_theta = 10000.0;
  std::string rope_type = "default";  // "default", "linear" or "llama3"
  double rope_factor = 1.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  double original_max_positions = 8192;
};

// Reads the keys the forward pass depends on. Throws std::runtime_error for what the reference does not
// model (it is a test oracle, not a loader: messages only need to be clear enough to fix the test).
inline DecoderConfig parse_config(const nlohmann::json& j) {
  auto need = [&](const char* key) -> const nlohmann::json& {
    if (!j.contains(key) || j[key].is_null()) throw std::runtime_error(std::string("config lacks ") + key);
    return j[key];
  };
  DecoderConfig c;
  c.model_type = need("model_type").get<std::string>();
  // FastVLM's LlavaQwen2ForCausalLM is a Qwen2ForCausalLM with a vision tower in front; on text alone its
  // language model is exactly Qwen2 (the tiny-fastvlm text_only golden pins that).
  if (c.model_type == "llava_qwen2") c.model_type = "qwen2";
  if (c.model_type != "qwen2" && c.model_type != "llama")
    throw std::runtime_error("reference models qwen2 and llama only, not " + c.model_type);
  c.hidden = need("hidden_size").get<int>();
  c.intermediate = need("intermediate_size").get<int>();
  c.layers = need("num_hidden_layers").get<int>();
  c.heads = need("num_attention_heads").get<int>();
  c.vocab = need("vocab_size").get<int>();
  auto given = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  c.kv_heads = given("num_key_value_heads") ? j["num_key_value_heads"].get<int>() : c.heads;
  c.head_dim = given("head_dim") ? j["head_dim"].get<int>() : c.hidden / c.heads;
  if (c.kv_heads <= 0 || c.heads % c.kv_heads != 0)
    throw std::runtime_error("num_attention_heads must be a multiple of num_key_value_heads");
  c.rms_eps = j.value("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = j.value("tie_word_embeddings", false);
  if (c.model_type == "qwen2") {
    c.qkv_bias = true;  // Qwen2Attention: q/k/v Linear(bias=True), o_proj bias=False, MLP bias-free
    if (j.value("use_sliding_window", false))
      throw std::runtime_error("reference does not model sliding-window attention");
  } else {
    c.qkv_bias = c.o_bias = j.value("attention_bias", false);
    c.mlp_bias = j.value("mlp_bias", false);
  }
  if (j.value("hidden_act", std::string("silu")) != "silu") throw std::runtime_error("hidden_act must be silu");

  // transformers >= 5 folds rope_theta and rope_scaling into one `rope_parameters` object.
  nlohmann::json scaling;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    scaling = j["rope_parameters"];
    c.rope_theta = scaling.value("rope_theta", j.value("rope_theta", 10000.0));
  } else {
    c.rope_theta = j.value("rope_theta", 10000.0);
    if (j.contains("rope_scaling")) scaling = j["rope_scaling"];
  }
  if (scaling.is_object()) {
    // Older configs spell the key "type".
    c.rope_type = scaling.value("rope_type", scaling.value("type", std::string("default")));
    if (c.rope_type != "default" && c.rope_type != "linear" && c.rope_type != "llama3")
      throw std::runtime_error("reference does not model rope type " + c.rope_type);
    c.rope_factor = scaling.value("factor", 1.0);
    c.low_freq_factor = scaling.value("low_freq_factor", 1.0);
    c.high_freq_factor = scaling.value("high_freq_factor", 4.0);
    c.original_max_positions = scaling.value("original_max_position_embeddings", 8192.0);
  }
  return c;
}

// The rotary inverse frequencies after rope scaling (modeling_rope_utils.py).
inline std::vector<double> rope_inv_freq(const DecoderConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<double> inv(half);
  for (int i = 0; i < half; ++i) inv[i] = 1.0 / std::pow(c.rope_theta, double(2 * i) / c.head_dim);
  if (c.rope_type == "linear") {
    for (double& f : inv) f /= c.rope_factor;
  } else if (c.rope_type == "llama3") {
    const double low_wavelen = c.original_max_positions / c.low_freq_factor;
    const double high_wavelen = c.original_max_positions / c.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / c.rope_factor;  // long wavelengths: interpolated
      } else if (wavelen < high_wavelen) {
        // short wavelengths: kept
      } else {  // in between: a blend of the two
        const double s = (c.original_max_positions / wavelen - c.low_freq_factor) /
                         (c.high_freq_factor - c.low_freq_factor);
        f = (1 - s) * f / c.rope_factor + s * f;
      }
    }
  }
  return inv;
}

// A weight matrix [rows, cols] (nn.Linear: out x in) held as float: every bf16/f16 value is exact in
// float, and all arithmetic on it below is in double.
struct Matrix {
  int rows = 0, cols = 0;
  std::vector<float> data;
  const float* row(int r) const { return data.data() + size_t(r) * cols; }
};

struct Layer {
  std::vector<float> input_norm, post_norm;
  Matrix q, k, v, o, gate, up, down;
  std::vector<float> q_bias, k_bias, v_bias, o_bias, gate_bias, up_bias, down_bias;  // empty when absent
};

struct GreedyRun {
  // step_logits[s]: the logits (whole padded vocabulary) token s was chosen from; step_logits[0] is at
  // the last prompt position.
  std::vector<std::vector<double>> step_logits;
  std::vector<int32_t> tokens;   // greedy, over ids < candidates
  std::vector<double> margins;   // top-1 minus top-2 logit at each step
};

class DecoderReference {
 public:
  // Reads `dir`/config.json and `dir`/model.safetensors (one file: the tests' checkpoints are small).
  // `adjust`, when given, edits the parsed config before the weights are read: the tests use it to
  // show that a wrong rope would be caught.
  static DecoderReference load(const std::filesystem::path& dir,
                               const std::function<void(DecoderConfig&)>& adjust = {}) {
    std::ifstream in(dir / "config.json");
    if (!in) throw std::runtime_error((dir / "config.json").string() + ": cannot open");
    DecoderReference r;
    r.config_ = parse_config(nlohmann::json::parse(in));
    if (adjust) adjust(r.config_);
    const DecoderConfig& c = r.config_;
    auto st = SafetensorsFile::open(dir / "model.safetensors");
    auto vec = [&](const std::string& name, int64_t n, bool present) {
      std::vector<float> out;
      if (!present) return out;
      const TensorInfo* t = st->find(name);
      if (!t) throw std::runtime_error("model.safetensors lacks " + name);
      if (shape_numel(t->shape) != n) throw std::runtime_error(name + ": unexpected size");
      out.resize(n);
      convert_to_f32(t->dtype, t->data, out.data(), out.size());
      return out;
    };
    auto mat = [&](const std::string& name, int rows, int cols) {
      const TensorInfo* t = st->find(name);
      if (!t) throw std::runtime_error("model.safetensors lacks " + name);
      if (t->shape != Shape{rows, cols}) throw std::runtime_error(name + ": unexpected shape " + shape_string(t->shape));
      Matrix m{rows, cols, std::vector<float>(size_t(rows) * cols)};
      convert_to_f32(t->dtype, t->data, m.data.data(), m.data.size());
      return m;
    };
    const int qd = c.heads * c.head_dim, kvd = c.kv_heads * c.head_dim;
    r.embed_ = mat("model.embed_tokens.weight", c.vocab, c.hidden);
    for (int i = 0; i < c.layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      Layer L;
      L.input_norm = vec(p + "input_layernorm.weight", c.hidden, true);
      L.post_norm = vec(p + "post_attention_layernorm.weight", c.hidden, true);
      L.q = mat(p + "self_attn.q_proj.weight", qd, c.hidden);
      L.k = mat(p + "self_attn.k_proj.weight", kvd, c.hidden);
      L.v = mat(p + "self_attn.v_proj.weight", kvd, c.hidden);
      L.o = mat(p + "self_attn.o_proj.weight", c.hidden, qd);
      L.q_bias = vec(p + "self_attn.q_proj.bias", qd, c.qkv_bias);
      L.k_bias = vec(p + "self_attn.k_proj.bias", kvd, c.qkv_bias);
      L.v_bias = vec(p + "self_attn.v_proj.bias", kvd, c.qkv_bias);
      L.o_bias = vec(p + "self_attn.o_proj.bias", c.hidden, c.o_bias);
      L.gate = mat(p + "mlp.gate_proj.weight", c.intermediate, c.hidden);
      L.up = mat(p + "mlp.up_proj.weight", c.intermediate, c.hidden);
      L.down = mat(p + "mlp.down_proj.weight", c.hidden, c.intermediate);
      L.gate_bias = vec(p + "mlp.gate_proj.bias", c.intermediate, c.mlp_bias);
      L.up_bias = vec(p + "mlp.up_proj.bias", c.intermediate, c.mlp_bias);
      L.down_bias = vec(p + "mlp.down_proj.bias", c.hidden, c.mlp_bias);
      r.layers_.push_back(std::move(L));
    }
    r.final_norm_ = vec("model.norm.weight", c.hidden, true);
    if (st->find("lm_head.weight")) {
      r.lm_head_ = mat("lm_head.weight", c.vocab, c.hidden);
      r.has_lm_head_ = true;
    } else if (!c.tie_word_embeddings) {
      throw std::runtime_error("untied checkpoint lacks lm_head.weight");
    }
    r.inv_freq_ = rope_inv_freq(c);
    return r;
  }

  const DecoderConfig& config() const { return config_; }

  // Prefills `prompt`, then greedily appends `steps` tokens chosen among ids < `candidates` (the
  // tokenizer's vocabulary; the padded embedding rows past it are never chosen). No EOS stop.
  GreedyRun greedy(std::span<const int32_t> prompt, int steps, int candidates) const {
    if (prompt.empty()) throw std::runtime_error("empty prompt");
    Cache cache(config_);
    std::vector<double> x;
    for (size_t p = 0; p < prompt.size(); ++p) x = forward_position(prompt[p], int(p), cache);
    GreedyRun run;
    std::vector<double> logits = lm_head(x);
    for (int s = 0; s < steps; ++s) {
      const int limit = std::min<int>(candidates, int(logits.size()));
      int best = 0;
      for (int i = 1; i < limit; ++i)
        if (logits[i] > logits[best]) best = i;  // first maximum wins, as torch.argmax
      double second = -std::numeric_limits<double>::infinity();
      for (int i = 0; i < limit; ++i)
        if (i != best) second = std::max(second, logits[i]);
      run.tokens.push_back(best);
      run.step_logits.push_back(logits);
      run.margins.push_back(logits[best] - second);
      if (s + 1 < steps) logits = lm_head(forward_position(best, int(prompt.size()) + s, cache));
    }
    return run;
  }

 private:
  struct Cache {
    explicit Cache(const DecoderConfig& c) : k(c.layers), v(c.layers) {}
    std::vector<std::vector<std::vector<double>>> k, v;  // [layer][position][kv_heads * head_dim]
  };

  static std::vector<double> linear(const Matrix& w, const std::vector<float>& bias, const std::vector<double>& x) {
    std::vector<double> y(w.rows);
    for (int r = 0; r < w.rows; ++r) {
      const float* row = w.row(r);
      double acc = bias.empty() ? 0.0 : double(bias[r]);
      for (int i = 0; i < w.cols; ++i) acc += double(row[i]) * x[i];
      y[r] = acc;
    }
    return y;
  }

  std::vector<double> rms_norm(const std::vector<double>& x, const std::vector<float>& w) const {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double scale = 1.0 / std::sqrt(ss / double(x.size()) + config_.rms_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * double(w[i]);
    return y;
  }

  // Rotate-half RoPE on every head of `x` ([n_heads * head_dim]) at `pos`.
  void rope(std::vector<double>& x, int n_heads, int pos) const {
    const int D = config_.head_dim, half = D / 2;
    for (int h = 0; h < n_heads; ++h) {
      double* v = x.data() + size_t(h) * D;
      for (int i = 0; i < half; ++i) {
        const double angle = double(pos) * inv_freq_[i];
        const double c = std::cos(angle), s = std::sin(angle);
        const double a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }

  // Runs token `id` at position `pos` through every layer (appending its K/V to `cache`) and returns
  // the final-normed hidden state.
  std::vector<double> forward_position(int32_t id, int pos, Cache& cache) const {
    const DecoderConfig& c = config_;
    if (id < 0 || id >= c.vocab) throw std::runtime_error("token id out of range");
    std::vector<double> x(c.hidden);
    for (int i = 0; i < c.hidden; ++i) x[i] = embed_.row(id)[i];
    const int D = c.head_dim, group = c.heads / c.kv_heads;
    const double scale = 1.0 / std::sqrt(double(D));
    for (int l = 0; l < c.layers; ++l) {
      const Layer& L = layers_[l];
      std::vector<double> n = rms_norm(x, L.input_norm);
      std::vector<double> q = linear(L.q, L.q_bias, n), k = linear(L.k, L.k_bias, n), v = linear(L.v, L.v_bias, n);
      rope(q, c.heads, pos);
      rope(k, c.kv_heads, pos);
      cache.k[l].push_back(std::move(k));
      cache.v[l].push_back(std::move(v));
      const int T = int(cache.k[l].size());  // positions 0..pos: causal by construction
      std::vector<double> attn(size_t(c.heads) * D, 0.0), scores(T);
      for (int h = 0; h < c.heads; ++h) {
        const int kvh = h / group;
        const double* qh = q.data() + size_t(h) * D;
        double mx = -std::numeric_limits<double>::infinity();
        for (int t = 0; t < T; ++t) {
          const double* kt = cache.k[l][t].data() + size_t(kvh) * D;
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += qh[d] * kt[d];
          scores[t] = dot * scale;
          mx = std::max(mx, scores[t]);
        }
        double sum = 0;
        for (int t = 0; t < T; ++t) sum += (scores[t] = std::exp(scores[t] - mx));
        double* out = attn.data() + size_t(h) * D;
        for (int t = 0; t < T; ++t) {
          const double p = scores[t] / sum;
          const double* vt = cache.v[l][t].data() + size_t(kvh) * D;
          for (int d = 0; d < D; ++d) out[d] += p * vt[d];
        }
      }
      std::vector<double> o = linear(L.o, L.o_bias, attn);
      for (int i = 0; i < c.hidden; ++i) x[i] += o[i];
      n = rms_norm(x, L.post_norm);
      std::vector<double> g = linear(L.gate, L.gate_bias, n), u = linear(L.up, L.up_bias, n);
      for (int i = 0; i < c.intermediate; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];  // silu(g) * u
      std::vector<double> d = linear(L.down, L.down_bias, g);
      for (int i = 0; i < c.hidden; ++i) x[i] += d[i];
    }
    return rms_norm(x, final_norm_);
  }

  std::vector<double> lm_head(const std::vector<double>& x) const {
    return linear(has_lm_head_ ? lm_head_ : embed_, {}, x);
  }

  DecoderConfig config_;
  Matrix embed_, lm_head_;
  bool has_lm_head_ = false;
  std::vector<Layer> layers_;
  std::vector<float> final_norm_;
  std::vector<double> inv_freq_;
};

}  // namespace fastvlm::reference
