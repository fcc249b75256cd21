// The pipeline behind include/fastvlm/fastvlm.hpp: the model the registry loads (a text decoder, and for a
// vision-language model an image encoder + projector), its tokenizer and chat format. image -> pixels ->
// encoder -> projector -> embeddings spliced into the tokenized chat prompt -> decoder prefill -> sampled
// tokens.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <future>
#include <list>
#include <mutex>
#include <optional>

#include "core/error.h"
#include "fastvlm/fastvlm.hpp"
#include "image/decode.h"
#include "image/preprocess.h"
#include "llm/kv_cache.h"
#include "llm/sampling.h"
#include "models/precision_choice.h"
#include "models/registry.h"
#include "text/chat_format.h"
#include "text/json_schema.h"
#include "text/tokenizer.h"
#include "text/tokenizer_config.h"
#include "text/unicode.h"

namespace fastvlm {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

}  // namespace

// An image's embeddings [image_tokens, hidden] with the hash that identifies it in KV-cache prefixes.
struct EncodedImage {
  uint64_t key;
  std::shared_ptr<const std::vector<float>> embeddings;
};

struct Engine::Impl {
  EncodedImage encode(const ImageInput& input, Timings* timings, std::vector<float>* features = nullptr,
                      std::vector<float>* pixel_values = nullptr) const;
  // The chat format, or the reason there is none (no chat_template, or one of an unknown family): raw
  // prompts still work.
  const text::ChatFormat& chat_format() const;
  const TextDecoder& decoder() const { return *model->decoder; }
  // OpenMP's thread count is per calling thread: every entry point that computes sets it for its caller
  // (a server worker, a caption prefetch thread), not only the thread that loaded the engine.
  void use_threads() const {
    if (options.threads > 0) omp_set_num_threads(options.threads);
  }

  std::unique_ptr<Model> model;
  std::unique_ptr<text::Tokenizer> tokenizer;
  text::TokenizerConfig tokenizer_config;
  std::optional<text::ChatFormat> format;
  std::string no_format_reason;
  EngineOptions options;
  ModelInfo info;
  double load_ms = 0;
  std::vector<int32_t> stop_ids;  // end-of-turn ids: the format's end-of-turn tokens and the config's eos ids
  size_t sampled_vocab = 0;       // ids that can be sampled: min(LLM vocab, tokenizer vocab)

  // Embeddings of recently seen images, keyed by a hash of the decoded pixels (the input size is fixed
  // per engine), most recently used first.
  struct CachedImage {
    uint64_t key;
    std::shared_ptr<const std::vector<float>> embeddings;
  };
  mutable std::mutex image_cache_mutex;
  mutable std::list<CachedImage> image_cache;

  // Structured output: the schema compiled with its mask cache, the most recently used first (a server
  // sees the same few schemas again and again), over the vocabulary trie built at the first schema.
  std::shared_ptr<const text::JsonConstraint> json_constraint(const std::string& schema_text) const;
  mutable std::once_flag trie_once;
  mutable std::shared_ptr<const text::TokenTrie> trie;
  mutable std::mutex constraints_mutex;
  mutable std::list<std::pair<std::string, std::shared_ptr<const text::JsonConstraint>>> constraints;
};

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
                                  std::vector<float>* pixel_values) const {
  if (!model->vision)
    throw Error("model " + info.path + " (" + model->family + ") has no vision encoder: it cannot take an image");
  use_threads();
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

// ---------------------------------------------------------------------------------------------------

namespace {

// The positions of a prompt: text token ids and image rows. Each position has a key that identifies
// its content (token id, or image hash and row), so two prompts can be compared for a shared prefix.
struct Sequence {
  std::vector<uint64_t> keys;
  std::vector<int32_t> ids;        // kImageMarker at image positions
  std::vector<const float*> rows;  // the embedding row of image positions, nullptr for text
  std::vector<int32_t> prompt_ids;  // the tokenized prompt, one kImageMarker per image

  void add_text(std::span<const int32_t> tokens) {
    for (int32_t id : tokens) {
      keys.push_back(uint32_t(id));
      ids.push_back(id);
      rows.push_back(nullptr);
    }
  }
  void add_image(const EncodedImage& image, int tokens, int hidden) {
    for (int i = 0; i < tokens; ++i) {
      keys.push_back((image.key | (1ull << 63)) + uint64_t(i));  // never equal to a token id
      ids.push_back(text::kImageMarker);
      rows.push_back(image.embeddings->data() + size_t(i) * hidden);
    }
  }
  // Tokenized prompt ids with markers, each marker taking the next image in order.
  void add_prompt(std::span<const int32_t> prompt_ids, std::span<const EncodedImage> images, int tokens, int hidden) {
    this->prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());
    size_t next_image = 0;
    for (size_t i = 0; i < prompt_ids.size(); ++i) {
      if (prompt_ids[i] != text::kImageMarker) {
        add_text(prompt_ids.subspan(i, 1));
        continue;
      }
      if (next_image == images.size())
        throw Error("the prompt contains the text \"<image>\": images are placed by the engine, not by the prompt text");
      add_image(images[next_image++], tokens, hidden);
    }
    if (next_image != images.size()) throw Error("internal: an image has no place in the prompt");
  }
  int size() const { return int(keys.size()); }
};

// Streams text while holding back anything that could still become a stop string.
class StopStringFilter {
 public:
  explicit StopStringFilter(const std::vector<std::string>& stops) : stops_(stops) {}

  // Appends `piece`; returns the text now safe to emit. Sets stopped() when a stop string appeared (the
  // text is then cut just before it).
  std::string push(std::string_view piece) {
    text_ += piece;
    size_t safe_end = text_.size();
    for (const auto& stop : stops_) {
      if (stop.empty()) continue;
      size_t search_from = emitted_ > stop.size() ? emitted_ - stop.size() : 0;
      size_t at = text_.find(stop, search_from);
      if (at != std::string::npos) {
        stopped_ = true;
        text_.resize(at);
        safe_end = std::min(safe_end, at);
      }
    }
    if (!stopped_) {
      for (const auto& stop : stops_)
        for (size_t len = std::min(stop.size() - 1, text_.size()); len > 0; --len)
          if (text_.compare(text_.size() - len, len, stop, 0, len) == 0) {
            safe_end = std::min(safe_end, text_.size() - len);
            break;
          }
    }
    safe_end = std::max(safe_end, emitted_);
    std::string out = text_.substr(emitted_, safe_end - emitted_);
    emitted_ = safe_end;
    return out;
  }
  // Whatever was held back, at the end of generation.
  std::string finish() {
    std::string out = text_.substr(emitted_);
    emitted_ = text_.size();
    return out;
  }
  bool stopped() const { return stopped_; }
  const std::string& text() const { return text_; }

 private:
  const std::vector<std::string>& stops_;
  std::string text_;
  size_t emitted_ = 0;
  bool stopped_ = false;
};

// Offsets in the user's own text, before the chat template moves them.
void check_utf8(const std::string& text, const char* what) {
  if (auto offset = text::find_invalid_utf8(text))
    throw Error(std::string(what) + " is not valid UTF-8 (byte " + std::to_string(*offset) + ")");
}

// Before any work: the prompt's image markers match the images, and its positions fit the context.
void check_fits(const Engine::Impl& engine, std::span<const int32_t> ids, int images, int capacity) {
  const size_t markers = size_t(std::count(ids.begin(), ids.end(), text::kImageMarker));
  const size_t positions = ids.size() - markers + size_t(images) * engine.info.image_tokens;
  // Only a raw prompt can miss: a chat format places each image itself, and reads "<image>" in a message
  // as text.
  if (markers != size_t(images))
    throw Error("the prompt has " + std::to_string(markers) + " \"<image>\" place(s) for " + std::to_string(images) +
                " image(s): a raw prompt puts each image where it says \"<image>\"");
  if (positions >= size_t(capacity))
    throw Error("prompt of " + std::to_string(positions) + " positions does not fit the context of " +
                std::to_string(capacity) + ": raise --ctx or shorten the prompt");
}

}  // namespace

// A turn of the conversation a Session holds, with its image's embeddings.
struct HeldTurn {
  text::ChatTurn turn;
  std::optional<EncodedImage> image;
};

struct Session::State {
  explicit State(const Engine::Impl& engine) : cache(engine.decoder().config(), engine.options.context) {}
  KVCache cache;
  std::optional<std::string> system_prompt;  // unset: the chat format's default
  std::vector<HeldTurn> history;              // the conversation so far, for ask()
  std::vector<uint64_t> keys;                 // content keys of the cached positions
  std::vector<int32_t> tokens;                // their ids (kImageMarker at image positions), for the repetition penalty

  // The positions of `turns` rendered in the engine's chat format, images spliced in.
  Sequence chat_sequence(const Engine::Impl& engine, std::span<const HeldTurn> turns) const;
  // Answers the last (user) turn of `conversation`, which then, with the answer, is the session's history.
  Generation answer(const Engine::Impl& engine, std::vector<HeldTurn> conversation, const GenerateOptions& options,
                    const TextCallback& on_text, Clock::time_point turn_start, const Timings& timings);
  // Runs `sequence`: keeps the longest prefix the cache shares with it (at least one position is
  // prefilled, so that there are logits to sample from), prefills the rest, then samples up to max_tokens
  // tokens, feeding each back.
  Generation run(const Engine::Impl& engine, const Sequence& sequence, const GenerateOptions& options,
                 const TextCallback& on_text, Clock::time_point turn_start, Timings timings);
  Generation generate(const Engine::Impl& engine, const Sequence& sequence, int reuse, const GenerateOptions& options,
                      const TextCallback& on_text, Clock::time_point turn_start, Timings timings);
};

Session::Session(const Engine& engine) : engine_(engine), state_(std::make_unique<State>(engine.impl())) {}
Session::~Session() = default;

void Session::set_system_prompt(std::string system_prompt) { state_->system_prompt = std::move(system_prompt); }

void Session::reset() {
  state_->cache.clear();
  state_->keys.clear();
  state_->tokens.clear();
  state_->history.clear();
}

int Session::context_used() const { return state_->cache.size(); }

Sequence Session::State::chat_sequence(const Engine::Impl& engine, std::span<const HeldTurn> turns) const {
  std::vector<text::ChatTurn> rendered;
  std::vector<EncodedImage> images;
  if (system_prompt && (turns.empty() || turns.front().turn.role != "system"))
    rendered.push_back({"system", *system_prompt, false});
  for (const HeldTurn& held : turns) {
    rendered.push_back(held.turn);
    if (held.image) images.push_back(*held.image);
  }
  // Message text is read as text: a user cannot write the format's special tokens, nor place an image.
  const std::vector<int32_t> ids = text::tokenize_prompt(*engine.tokenizer, engine.chat_format().render_marked(rendered));
  Sequence sequence;
  check_fits(engine, ids, int(images.size()), cache.capacity());
  sequence.add_prompt(ids, images, engine.info.image_tokens, engine.info.hidden_size);
  return sequence;
}

Generation Session::ask(const std::string& user_text, const ImageInput* image, const GenerateOptions& options,
                        const TextCallback& on_text) {
  const Engine::Impl& engine = engine_.impl();
  State& state = *state_;
  const auto turn_start = Clock::now();
  check_utf8(user_text, "the prompt");
  engine.chat_format();  // before any work: a model without a chat format cannot chat
  Timings timings;
  HeldTurn turn{{"user", user_text, image != nullptr}, std::nullopt};
  if (image) turn.image = engine.encode(*image, &timings);
  std::vector<HeldTurn> conversation = state.history;
  conversation.push_back(std::move(turn));
  return state.answer(engine, std::move(conversation), options, on_text, turn_start, timings);
}

Generation Session::respond(const std::vector<ChatMessage>& conversation, const GenerateOptions& options,
                            const TextCallback& on_text) {
  const Engine::Impl& engine = engine_.impl();
  State& state = *state_;
  const auto turn_start = Clock::now();
  if (conversation.empty() || conversation.back().role != "user")
    throw Error("the conversation must end with a user message");
  int image_count = 0;
  for (const auto& message : conversation) {
    check_utf8(message.text, ("a " + message.role + " message").c_str());
    image_count += message.image ? 1 : 0;
  }
  engine.chat_format();
  Timings timings;
  std::vector<HeldTurn> turns;
  for (const auto& message : conversation) {
    HeldTurn turn{{message.role, message.text, message.image.has_value()}, std::nullopt};
    if (message.image) turn.image = engine.encode(*message.image, image_count == 1 ? &timings : nullptr);
    turns.push_back(std::move(turn));
  }
  return state.answer(engine, std::move(turns), options, on_text, turn_start, timings);
}

Generation Session::complete(const std::string& prompt, const GenerateOptions& options, const TextCallback& on_text,
                             const ImageInput* image) {
  const Engine::Impl& engine = engine_.impl();
  State& state = *state_;
  const auto turn_start = Clock::now();
  check_utf8(prompt, "the prompt");
  std::vector<int32_t> ids = text::tokenize_prompt(*engine.tokenizer, prompt);
  const text::TokenizerConfig& tc = engine.tokenizer_config;
  // A raw prompt gets what the tokenizer adds itself (BOS where tokenizer_config asks for it), no more.
  if (tc.add_bos_token && !tc.bos_token.empty()) {
    const int32_t bos = engine.tokenizer->token_to_id(tc.bos_token);
    if (bos >= 0) ids.insert(ids.begin(), bos);
  }
  check_fits(engine, ids, image ? 1 : 0, state.cache.capacity());
  if (ids.empty()) throw Error("the prompt is empty");
  Timings timings;
  std::vector<EncodedImage> images;
  if (image) images.push_back(engine.encode(*image, &timings));
  Sequence sequence;
  sequence.add_prompt(ids, images, engine.info.image_tokens, engine.info.hidden_size);
  state.history.clear();  // a raw prompt is no conversation to continue
  return state.run(engine, sequence, options, on_text, turn_start, timings);
}

Generation Session::State::answer(const Engine::Impl& engine, std::vector<HeldTurn> conversation,
                                  const GenerateOptions& options, const TextCallback& on_text,
                                  Clock::time_point turn_start, const Timings& timings) {
  Generation result = run(engine, chat_sequence(engine, conversation), options, on_text, turn_start, timings);
  conversation.push_back({{"assistant", result.text, false}, std::nullopt});
  history = std::move(conversation);
  return result;
}

Generation Session::State::run(const Engine::Impl& engine, const Sequence& sequence, const GenerateOptions& options,
                               const TextCallback& on_text, Clock::time_point turn_start, Timings timings) {
  size_t reuse = 0;
  while (reuse < keys.size() && reuse < sequence.keys.size() && keys[reuse] == sequence.keys[reuse]) ++reuse;
  reuse = std::min(reuse, sequence.keys.size() - 1);
  return generate(engine, sequence, int(reuse), options, on_text, turn_start, timings);
}

Generation Session::State::generate(const Engine::Impl& engine, const Sequence& sequence, int reuse,
                                    const GenerateOptions& options, const TextCallback& on_text,
                                    Clock::time_point turn_start, Timings timings) {
  if (options.max_tokens < 0) throw Error("max_tokens must be >= 0");
  engine.use_threads();
  for (int32_t id : options.forced_tokens)
    if (id < 0 || size_t(id) >= engine.sampled_vocab)
      throw Error("forced token " + std::to_string(id) + " is outside the vocabulary [0, " +
                  std::to_string(engine.sampled_vocab) + ")");
  const bool forced = !options.forced_tokens.empty();
  if (options.logprobs > 20) throw Error("logprobs must be between 0 and 20, got " + std::to_string(options.logprobs));
  // Compiled before any model work, so a bad schema fails fast; teacher forcing ignores it.
  std::shared_ptr<const text::JsonConstraint> constraint;
  std::optional<text::JsonMatcher> matcher;
  if (!options.json_schema.empty() && !forced) {
    constraint = engine.json_constraint(options.json_schema);
    matcher.emplace(constraint->start());
  }
  Sampler sampler(options.sampling);
  const SamplingParams& sampling = options.sampling;
  const bool adjust = constraint || !sampling.logit_bias.empty() || sampling.presence_penalty != 0 ||
                      sampling.frequency_penalty != 0;
  std::vector<float> adjusted;
  const int max_tokens = forced ? std::min(options.max_tokens, int(options.forced_tokens.size())) : options.max_tokens;
  Generation result;
  const int hidden = engine.info.hidden_size;
  const int positions = sequence.size() - reuse;

  // Embeddings of the positions to prefill: runs of text through the embedding table, image rows copied.
  std::vector<float> embeds(size_t(positions) * hidden);
  for (int p = reuse; p < sequence.size();) {
    float* out = &embeds[size_t(p - reuse) * hidden];
    if (sequence.rows[p]) {
      std::memcpy(out, sequence.rows[p], size_t(hidden) * sizeof(float));
      ++p;
      continue;
    }
    int run_end = p;
    while (run_end < sequence.size() && !sequence.rows[run_end]) ++run_end;
    engine.decoder().embed(std::span(sequence.ids).subspan(p, run_end - p), out);
    p = run_end;
  }

  auto start = Clock::now();
  cache.truncate(reuse);
  keys.resize(reuse);
  tokens.resize(reuse);
  std::vector<float> logits = engine.decoder().forward(embeds.data(), positions, cache);
  timings.prefill_ms = ms_since(start);
  keys.insert(keys.end(), sequence.keys.begin() + reuse, sequence.keys.end());
  tokens.insert(tokens.end(), sequence.ids.begin() + reuse, sequence.ids.end());
  result.prompt_tokens = positions;
  result.prompt_ids = sequence.prompt_ids;

  text::StreamDecoder decoder(*engine.tokenizer);
  StopStringFilter filter(options.stop);
  auto emit = [&](const std::string& piece) {
    if (!piece.empty() && on_text && !on_text(piece)) result.stop_reason = StopReason::Cancelled;
  };

  std::vector<float> step_embedding(hidden);
  double decode_ms = 0;
  int decode_steps = 0;
  result.stop_reason = StopReason::MaxTokens;
  for (int n = 0; n < max_tokens; ++n) {
    // Rows past the tokenizer (the embedding is padded) are never sampled: the reference resizes the
    // embedding to the tokenizer's length.
    const auto sampled_logits = std::span(logits).first(engine.sampled_vocab);
    int32_t token;
    if (forced) {
      token = options.forced_tokens[n];
    } else if (!adjust) {
      token = sampler.sample(sampled_logits, tokens);
    } else {
      adjusted.assign(sampled_logits.begin(), sampled_logits.end());
      sampler.apply_penalties(adjusted, result.token_ids);
      if (constraint) {
        // Only tokens that keep the answer a prefix of a matching document; end-of-turn (not in the
        // trie) only once the document is complete.
        auto mask = constraint->allowed(*matcher);
        const bool complete = matcher->complete();
        if (mask->allowed == 0 && !complete) break;  // the matcher has no dead ends; never taken
        std::vector<std::pair<int32_t, float>> stops;
        for (int32_t id : engine.stop_ids)
          if (complete && size_t(id) < adjusted.size()) stops.emplace_back(id, adjusted[size_t(id)]);
        for (size_t id = 0; id < adjusted.size(); ++id)
          if (!mask->test(int32_t(id))) adjusted[id] = -INFINITY;
        for (const auto& [id, logit] : stops) adjusted[size_t(id)] = logit;
      }
      token = sampler.sample(adjusted, tokens);
    }
    if (n == 0) timings.ttft_ms = ms_since(turn_start);
    if (std::find(engine.stop_ids.begin(), engine.stop_ids.end(), token) != engine.stop_ids.end()) {
      result.stop_reason = StopReason::EndOfTurn;
      break;
    }
    if (matcher && !matcher->feed(engine.tokenizer->token_bytes(token)))
      throw Error("internal: token " + std::to_string(token) + " was sampled outside the JSON schema's mask");
    result.token_ids.push_back(token);
    if (options.logprobs >= 0) result.logprobs.push_back(token_logprob(sampled_logits, token, options.logprobs));
    if (options.keep_logits) result.step_logits.emplace_back(sampled_logits.begin(), sampled_logits.end());
    emit(filter.push(decoder.push(token)));
    if (filter.stopped()) result.stop_reason = StopReason::StopString;
    if (result.stop_reason == StopReason::Cancelled || result.stop_reason == StopReason::StopString ||
        n + 1 == max_tokens || cache.size() + 1 >= cache.capacity())
      break;
    start = Clock::now();
    engine.decoder().embed(std::span(&token, 1), step_embedding.data());
    logits = engine.decoder().forward(step_embedding.data(), 1, cache);
    keys.push_back(uint32_t(token));
    tokens.push_back(token);
    decode_ms += ms_since(start);
    ++decode_steps;
  }
  if (result.stop_reason != StopReason::StopString && result.stop_reason != StopReason::Cancelled)
    emit(filter.push(decoder.flush()) + filter.finish());
  result.text = filter.text();
  timings.load_ms = engine.load_ms;
  timings.decode_ms_per_token = decode_steps ? decode_ms / decode_steps : 0;
  result.timings = timings;
  return result;
}

}  // namespace fastvlm
