// The Engine behind include/fastvlm/fastvlm.hpp: loads the model the registry finds (a text decoder, and
// for a vision-language model an image encoder + projector), its tokenizer and chat format, and encodes
// images (pixels -> encoder -> projector -> embeddings), keeping the most recent ones. Generation lives in
// session.cpp (one conversation) and scheduler.cpp (many at once) over request_state.h.
#include <malloc.h>

#include <algorithm>
#include <cstring>
#include <future>

#include "core/error.h"
#include "image/decode.h"
#include "image/preprocess.h"
#include "models/precision_choice.h"
#include "models/registry.h"
#include "vlm/engine_impl.h"

namespace fastvlm {

std::shared_ptr<const text::JsonConstraint> Engine::Impl::json_constraint(const std::string& schema_text) const {
  constexpr size_t kKeptSchemas = 8;
  {
    std::lock_guard lock(constraints_mutex);
    for (auto it = constraints.begin(); it != constraints.end(); ++it)
      if (it->first == schema_text) {
        constraints.splice(constraints.begin(), constraints, it);
        return it->second;
      }
  }
  auto schema = text::JsonSchema::parse(schema_text);
  std::call_once(trie_once, [this] {
    std::vector<std::string_view> bytes(sampled_vocab);
    for (size_t id = 0; id < sampled_vocab; ++id) bytes[id] = tokenizer->token_bytes(int32_t(id));
    trie = std::make_shared<text::TokenTrie>(bytes, stop_ids);  // end-of-turn is the caller's to allow
  });
  auto constraint = std::make_shared<const text::JsonConstraint>(std::move(schema), trie);
  std::lock_guard lock(constraints_mutex);
  constraints.emplace_front(schema_text, constraint);
  if (constraints.size() > kKeptSchemas) constraints.pop_back();
  return constraint;
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

namespace {

// The format a model is prompted with: the one asked for, the family's own, or the tokenizer's template.
// Failing to find one is not an error until a chat needs it.
void choose_chat_format(Engine::Impl& impl, const std::string& model_dir) {
  const text::TokenizerConfig& tc = impl.tokenizer_config;
  const std::string& name = !impl.options.chat_format.empty() ? impl.options.chat_format : impl.model->chat_format;
  if (!name.empty()) {
    impl.format = text::ChatFormat::by_name(name, tc.bos_token, tc.eos_token);  // an unknown name fails the load
    return;
  }
  if (tc.chat_template.empty()) {
    impl.no_format_reason = model_dir + "/tokenizer_config.json has no chat_template";
    return;
  }
  try {
    impl.format = text::ChatFormat::from_template(tc.chat_template, tc.bos_token, tc.eos_token);
  } catch (const Error& e) {
    impl.no_format_reason = model_dir + "/tokenizer_config.json: " + e.what();
  }
}

}  // namespace

const text::ChatFormat& Engine::Impl::chat_format() const {
  if (!format) {
    std::string known;
    for (const auto& name : text::ChatFormat::names()) known += (known.empty() ? "" : ", ") + name;
    throw Error(no_format_reason + ": choose a chat format (" + known + ") or send the prompt as it is (raw)");
  }
  return *format;
}

std::unique_ptr<Engine> Engine::load(const std::string& model_dir, const EngineOptions& options) {
  const auto start = Clock::now();
  if (options.threads < 0) throw Error("threads must be >= 0, got " + std::to_string(options.threads));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->use_threads();
  // Reading the 150k-entry vocabulary and merges is a third of the load time and independent of the
  // weights: do it on the other core meanwhile.
  auto tokenizer = std::async(std::launch::async, [&model_dir] { return text::Tokenizer::load(model_dir); });

  const ModelLoadOptions load_options = resolve_precision(options.precision);
  impl->model = load_model(model_dir, load_options);
  const Model& model = *impl->model;
  const TextConfig& text = model.decoder->config();
  if (options.context < 1 || options.context > text.max_position_embeddings)
    throw Error("context " + std::to_string(options.context) + " must be between 1 and the model's " +
                std::to_string(text.max_position_embeddings) + " positions");

  ModelInfo& info = impl->info;
  if (model.vision) {
    const int stride = model.vision->encoder->stride();
    ImageProcessorConfig& processor = impl->model->vision->processor;
    const bool pad = processor.mode == ImageProcessorConfig::Mode::PadToSquare;
    if (options.image_size > 0) {  // the side pixels are resized (and cropped) to
      processor.size = options.image_size;
      processor.crop_height = processor.crop_width = options.image_size;
    }
    const int image_size = pad ? processor.size : processor.crop_height;
    if (image_size % stride != 0 || image_size > 4096)
      throw Error("image size " + std::to_string(image_size) + " must be a multiple of " + std::to_string(stride) +
                  " and at most 4096");
    info.image_size = image_size;
    info.image_tokens = (image_size / stride) * (image_size / stride);
    info.vision_channels = model.vision->encoder->out_channels();
    info.vision_macs = model.vision->macs(image_size);
  } else if (options.image_size > 0) {
    throw Error("model " + model_dir + " (" + model.family + ") has no vision encoder: an image size means nothing to it");
  }
  impl->tokenizer = tokenizer.get();
  impl->tokenizer_config = text::read_tokenizer_config(model_dir);
  choose_chat_format(*impl, model_dir);

  if (impl->format)
    for (const std::string& token : impl->format->end_of_turn_tokens()) {
      const int32_t id = impl->tokenizer->token_to_id(token);
      if (id >= 0) impl->stop_ids.push_back(id);
    }
  for (int id : text.eos_token_ids) impl->stop_ids.push_back(id);
  impl->sampled_vocab = std::min(size_t(text.vocab_size), impl->tokenizer->vocab_size());

  info.path = model_dir;
  info.family = model.family;
  info.chat_format = impl->format ? impl->format->name() : "";
  info.hidden_size = text.hidden_size;
  info.num_layers = text.num_hidden_layers;
  info.vocab_size = text.vocab_size;
  info.quantization = model.checkpoint->quantization().type;
  info.precision = describe_precision(options.precision, load_options, model.vision != nullptr, info.quantization);
  info.decode_weight_bytes = model.decoder->decode_weight_bytes();
  // The load's float32 temporaries (each vision weight before its norms are folded in and it is quantised,
  // the tokenizer's parse) leave ~70 MiB of free chunks inside the heap for FastVLM-0.5B; glibc gives back
  // only its top by itself.
  malloc_trim(0);
  impl->load_ms = ms_since(start);
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

const ModelInfo& Engine::info() const { return impl_->info; }
int64_t Engine::prefill_macs(int positions) const {
  return fastvlm::prefill_macs(impl_->decoder().config(), positions);
}
const EngineOptions& Engine::options() const { return impl_->options; }
double Engine::load_ms() const { return impl_->load_ms; }

namespace {

// 64-bit hash of the decoded pixels, 8 bytes a step: fast enough to be noise next to the encoder.
uint64_t hash_image(const Image& image) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t(image.width) << 32) ^ uint64_t(image.height);
  const uint8_t* p = image.rgb.data();
  size_t n = image.rgb.size(), i = 0;
  auto mix = [&h](uint64_t v) {
    h ^= v;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  };
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    mix(v);
  }
  for (; i < n; ++i) mix(p[i]);
  return h;
}

}  // namespace

EncodedImage Engine::Impl::encode(const ImageInput& input, Timings* timings, std::vector<float>* features,
                                  std::vector<float>* pixel_values, int threads) const {
  if (!model->vision)
    throw Error("model " + info.path + " (" + model->family + ") has no vision encoder: it cannot take an image");
  use_threads(threads);
  auto start = Clock::now();
  DecodeOptions decode_options;
  decode_options.max_pixels = options.max_image_pixels;
  Image image = input.path.empty() ? decode_image_memory(input.bytes, decode_options)
                                   : decode_image_file(input.path, decode_options);
  const uint64_t key = hash_image(image);
  const bool use_cache = options.image_cache_entries > 0 && !features && !pixel_values;
  if (use_cache) {
    std::lock_guard lock(image_cache_mutex);
    for (auto it = image_cache.begin(); it != image_cache.end(); ++it)
      if (it->key == key) {
        image_cache.splice(image_cache.begin(), image_cache, it);
        if (timings) {
          timings->preprocess_ms = ms_since(start);
          timings->image_cache_hit = true;
        }
        return {key, it->embeddings};
      }
  }
  Tensor pixels = preprocess_image(image, model->vision->processor);
  if (timings) timings->preprocess_ms = ms_since(start);
  if (pixel_values) pixel_values->assign(pixels.data(), pixels.data() + pixels.numel());

  start = Clock::now();
  Tensor tokens = model->vision->encoder->encode(pixels);
  if (timings) timings->vision_ms = ms_since(start);
  if (features) features->assign(tokens.data(), tokens.data() + tokens.numel());

  start = Clock::now();
  Tensor embeds = model->vision->projector->forward(tokens);
  if (timings) timings->projector_ms = ms_since(start);
  auto embeddings = std::make_shared<const std::vector<float>>(embeds.data(), embeds.data() + embeds.numel());
  if (use_cache) {
    std::lock_guard lock(image_cache_mutex);
    image_cache.push_front({key, embeddings});
    if (int(image_cache.size()) > options.image_cache_entries) image_cache.pop_back();
  }
  return {key, embeddings};
}

std::vector<int32_t> Engine::tokenize(const std::string& text) const { return impl_->tokenizer->encode(text); }

std::string Engine::detokenize(std::span<const int32_t> ids) const { return impl_->tokenizer->decode(ids); }

std::string Engine::token_bytes(int32_t id) const { return std::string(impl_->tokenizer->token_bytes(id)); }

int Engine::token_count() const { return int(impl_->sampled_vocab); }

std::vector<float> Engine::embed_text(const std::string& text, int* tokens) const {
  const std::vector<int32_t> ids = impl_->tokenizer->encode(text);
  if (ids.empty()) throw Error("the text to embed is empty");
  for (int32_t id : ids)
    if (id < 0 || size_t(id) >= impl_->sampled_vocab)
      throw Error("token " + std::to_string(id) + " of the text is outside the model's vocabulary");
  std::vector<float> rows(ids.size() * size_t(impl_->info.hidden_size));
  impl_->decoder().embed(ids, rows.data());
  if (tokens) *tokens = int(ids.size());
  return rows;
}

std::vector<float> Engine::embed_image(const ImageInput& input, Timings* timings, std::vector<float>* features,
                                       std::vector<float>* pixel_values) const {
  return *impl_->encode(input, timings, features, pixel_values).embeddings;
}

}  // namespace fastvlm
