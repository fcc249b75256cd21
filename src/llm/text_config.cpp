#include "llm/text_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <set>

#include "core/error.h"
#include "core/json_file.h"

namespace fastvlm {
namespace {

// A RoPE record: `rope_scaling` (transformers < 5) or `rope_parameters` (transformers >= 5, which also
// holds rope_theta). Every key must be one this type uses: an unknown one could change the math.
void parse_rope_record(const ConfigKeys& record, RopeConfig& rope) {
  const std::string type = record.string("rope_type", record.string("type", "default"));
  std::set<std::string> allowed = {"rope_type", "type", "rope_theta"};
  if (type == "default") {
    rope.type = RopeConfig::Type::Default;
  } else if (type == "linear") {
    rope.type = RopeConfig::Type::Linear;
    rope.factor = record.required_number("factor");
    allowed.insert("factor");
  } else if (type == "llama3") {
    rope.type = RopeConfig::Type::Llama3;
    rope.factor = record.required_number("factor");
    rope.low_freq_factor = record.required_number("low_freq_factor");
    rope.high_freq_factor = record.required_number("high_freq_factor");
    rope.original_max_position_embeddings = record.required_integer("original_max_position_embeddings");
    if (!(rope.high_freq_factor > rope.low_freq_factor))
      record.fail("high_freq_factor", "a number greater than low_freq_factor");
    allowed.insert({"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"});
  } else {
    record.fail(record.has("rope_type") ? "rope_type" : "type",
                "\"default\", \"linear\" or \"llama3\" (other RoPE types are not implemented)");
  }
  for (const auto& [key, value] : record.object().items())
    if (!allowed.contains(key) && !value.is_null())
      record.fail(key.c_str(), "no such key for rope type \"" + type + "\" (not implemented)");
}

// Ceilings well above every released model (Llama 3.1 405B: hidden 16384, intermediate 53248, 126 layers,
// 128 heads; vocabularies reach 262144), so that a corrupt value is refused before it sizes any memory.
constexpr int kMaxHiddenSize = 1 << 16;
constexpr int kMaxIntermediateSize = 1 << 18;
constexpr int kMaxLayers = 1024;
constexpr int kMaxHeads = 1024;
constexpr int kMaxHeadDim = 1024;
constexpr int kMaxVocabulary = 1 << 22;
// Each weight matrix must hold fewer than 2^31 elements, so that no element count computed in int
// overflows; the largest released matrix (Llama 3.1 405B's embedding) holds 2.1e9.
void check_matrix(const ConfigKeys& keys, const char* key, int64_t rows, int64_t cols) {
  if (rows * cols > INT32_MAX)
    keys.fail(key, "a value whose weight matrix (" + std::to_string(rows) + " x " + std::to_string(cols) +
                       ") holds fewer than 2^31 elements");
}

}  // namespace

TextConfig parse_text_config(const ConfigKeys& keys) {
  TextConfig text;
  text.hidden_size = keys.required_integer("hidden_size", 1, kMaxHiddenSize);
  text.intermediate_size = keys.required_integer("intermediate_size", 1, kMaxIntermediateSize);
  text.num_hidden_layers = keys.required_integer("num_hidden_layers", 1, kMaxLayers);
  text.num_attention_heads = keys.required_integer("num_attention_heads", 1, kMaxHeads);
  text.num_key_value_heads = keys.integer("num_key_value_heads", text.num_attention_heads, 1, kMaxHeads);
  if (keys.has("head_dim")) {
    text.head_dim = keys.required_integer("head_dim", 1, kMaxHeadDim);
  } else {
    if (text.hidden_size % text.num_attention_heads != 0) keys.fail("num_attention_heads", "a divisor of hidden_size");
    text.head_dim = text.hidden_size / text.num_attention_heads;
  }
  if (text.head_dim % 2 != 0) keys.fail("head_dim", "an even number (rotary pairs)");
  if (text.num_attention_heads % text.num_key_value_heads != 0)
    keys.fail("num_key_value_heads", "a divisor of num_attention_heads");
  text.rms_norm_eps = float(keys.number("rms_norm_eps", 1e-6));
  text.vocab_size = keys.required_integer("vocab_size", 1, kMaxVocabulary);
  check_matrix(keys, "num_attention_heads", int64_t(text.num_attention_heads) * text.head_dim, text.hidden_size);
  check_matrix(keys, "intermediate_size", text.intermediate_size, text.hidden_size);
  check_matrix(keys, "vocab_size", text.vocab_size, text.hidden_size);
  text.tie_word_embeddings = keys.boolean("tie_word_embeddings", false);
  text.max_position_embeddings = keys.integer("max_position_embeddings", 32768, 1);
  text.bos_token_id = keys.integer("bos_token_id", -1, 0);
  text.eos_token_ids = keys.integers("eos_token_id");
  if (keys.string("hidden_act", "silu") != "silu") keys.fail("hidden_act", "\"silu\"");

  // RoPE: the base at the top level or in rope_parameters; the scaling in rope_scaling or rope_parameters.
  const bool has_parameters = keys.has("rope_parameters");
  if (keys.has("rope_theta")) {
    text.rope.theta = keys.number("rope_theta", 0);
  } else if (has_parameters && keys.nested("rope_parameters").has("rope_theta")) {
    text.rope.theta = keys.nested("rope_parameters").number("rope_theta", 0);
  } else {
    keys.fail("rope_theta", "a positive number (here or in rope_parameters.rope_theta): the RoPE base");
  }
  if (keys.has("rope_scaling")) parse_rope_record(keys.nested("rope_scaling"), text.rope);
  else if (has_parameters) parse_rope_record(keys.nested("rope_parameters"), text.rope);
  return text;
}

void read_generation_eos_ids(const std::filesystem::path& dir, TextConfig& config) {
  const auto file = dir / "generation_config.json";
  if (!std::filesystem::exists(file)) return;
  const nlohmann::json generation = read_json_file(file);
  for (int id : ConfigKeys(generation, file).integers("eos_token_id"))
    if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), id) == config.eos_token_ids.end())
      config.eos_token_ids.push_back(id);
}

std::vector<double> rope_inverse_frequencies(const RopeConfig& rope, int head_dim) {
  std::vector<double> inverse(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) inverse[i] = std::pow(rope.theta, -2.0 * i / head_dim);
  if (rope.type == RopeConfig::Type::Linear) {
    for (double& f : inverse) f /= rope.factor;
  } else if (rope.type == RopeConfig::Type::Llama3) {
    // Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
    const double original = rope.original_max_position_embeddings;
    const double low_freq_wavelength = original / rope.low_freq_factor;
    const double high_freq_wavelength = original / rope.high_freq_factor;
    for (double& f : inverse) {
      const double wavelength = 2 * std::numbers::pi / f;
      if (wavelength > low_freq_wavelength) {
        f /= rope.factor;
      } else if (wavelength >= high_freq_wavelength) {
        const double smooth =
            (original / wavelength - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
        f = (1 - smooth) * f / rope.factor + smooth * f;
      }
    }
  }
  return inverse;
}

}  // namespace fastvlm
