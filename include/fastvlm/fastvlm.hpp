#pragma once
// fastvlm.cpp C++ API: load a model once (Engine) — FastVLM, or a text-only Qwen2 or LLaMA — then hold
// conversations with it (Session), each with its own KV cache. Only standard types cross this boundary.
//
//   auto engine = fastvlm::Engine::load("FastVLM-0.5B");
//   fastvlm::Session chat(*engine);
//   auto answer = chat.ask("Describe the image.", fastvlm::ImageInput::file("cat.jpg"), {},
//                          [](std::string_view piece) { std::cout << piece << std::flush; return true; });
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fastvlm/error.hpp"
#include "fastvlm/precision.hpp"
#include "fastvlm/sampling.hpp"

namespace fastvlm {

struct EngineOptions {
  int threads = 0;                        // 0: one per core
  int context = 4096;                     // KV cache positions of each Session
  int image_size = 0;                     // 0: the model's native input size; else a multiple of 64
  int64_t max_image_pixels = 64LL << 20;  // images whose header claims more are refused before decoding
  int image_cache_entries = 16;           // LRU of image embeddings keyed by the decoded pixels (0: off)
  Precision precision = Precision::Auto;  // Auto: the fastest path within the README's bounds; F32: the reference
  // The prompt markup: empty for the model's own (FastVLM's qwen_2, else the family recognised from the
  // tokenizer's chat_template); or one of "chatml", "llama2", "llama3", "deepseek", "phi3", "fastvlm".
  std::string chat_format;
};

struct GenerateOptions {
  int max_tokens = 256;
  SamplingParams sampling;        // greedy by default
  std::vector<std::string> stop;  // generation ends before the first occurrence of any of these
  // Teacher forcing, to measure a model against a reference: when not empty, step i takes
  // forced_tokens[i] instead of sampling one, and generation ends after the last of them (or earlier, as
  // usual, at max_tokens, an end-of-turn id or a stop string).
  std::vector<int32_t> forced_tokens;
  bool keep_logits = false;  // fill Generation::step_logits
  // Structured output: a JSON Schema (text; `{"type":"object"}` for any JSON object). Every sampled
  // token keeps the answer a prefix of a compact JSON document it accepts, and end-of-turn may only
  // follow a complete one (src/text/json_schema.h lists the subset generated). Empty: free text.
  // An invalid or unsupported schema throws fastvlm::Error naming the keyword.
  std::string json_schema;
  int logprobs = -1;  // >= 0: fill Generation::logprobs, with this many alternatives per token (<= 20)
};

// Milliseconds. ttft_ms runs from the moment the image file is opened (or, without an image, from the
// start of the turn) to the first sampled token.
struct Timings {
  double load_ms = 0, preprocess_ms = 0, vision_ms = 0, projector_ms = 0, prefill_ms = 0, ttft_ms = 0;
  double decode_ms_per_token = 0;
  bool image_cache_hit = false;  // the image's embeddings came from the cache (vision_ms is then 0)
};

enum class StopReason { EndOfTurn, MaxTokens, StopString, Cancelled };

struct Generation {
  std::string text;
  std::vector<int32_t> token_ids;
  int prompt_tokens = 0;  // positions prefilled for this turn (image tokens included)
  int cached_tokens = 0;  // positions of the prompt reused from the KV cache: the whole prompt is both together
  std::vector<int32_t> prompt_ids;  // the whole prompt's token ids (the conversation so far), -200 per image
  StopReason stop_reason = StopReason::EndOfTurn;
  Timings timings;
  // With GenerateOptions::keep_logits, one entry per token_ids entry: the raw logits (before any
  // repetition penalty or temperature) that token was chosen from, over the ids that can be generated
  // (the tokenizer's vocabulary, which may be shorter than the padded embedding).
  std::vector<std::vector<float>> step_logits;
  std::vector<TokenLogprob> logprobs;  // with GenerateOptions::logprobs >= 0, one per token_ids entry
};

// An image as a file or as encoded bytes (JPEG, PNG, WebP).
struct ImageInput {
  std::string path;
  std::vector<uint8_t> bytes;
  static ImageInput file(std::string path) { return {std::move(path), {}}; }
  static ImageInput memory(std::vector<uint8_t> bytes) { return {"", std::move(bytes)}; }
};

struct ModelInfo {
  std::string path;
  std::string family;         // "fastvlm", "qwen2", "llama"
  std::string chat_format;    // the format chats are rendered in; empty when the model has none (raw prompts only)
  int hidden_size = 0, num_layers = 0, vocab_size = 0;
  // 0 for a text-only model:
  int image_size = 0;         // input size used for images
  int image_tokens = 0;       // (image_size / 64)^2
  int vision_channels = 0;    // mm_hidden_size
  int64_t vision_macs = 0;    // multiply-accumulates of one image encode at image_size
  std::string quantization;   // the LLM weights' block format ("q8_0", "q4_0"), empty for a dense model
  // EngineOptions::precision and what it resolved to, e.g. "auto -> vision int8, llm q8_0 (quantised at load)".
  std::string precision;
  int64_t decode_weight_bytes = 0;  // bytes of LLM weights one decoded token reads
};

// One message of a conversation. An image is placed before the text of its (user) message, as FastVLM
// was trained: "<image>\n{text}".
struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string text;
  std::optional<ImageInput> image;
};

// Receives each piece of generated text as soon as it is printable (UTF-8 complete, not part of a
// possible stop string). Returning false cancels the generation.
using TextCallback = std::function<bool(std::string_view piece)>;

class Engine {
 public:
  // Throws fastvlm::Error (a std::runtime_error) naming the file and problem.
  static std::unique_ptr<Engine> load(const std::string& model_dir, const EngineOptions& options = {});
  ~Engine();

  const ModelInfo& info() const;
  // Multiply-accumulates of prefilling `positions` positions into an empty cache (for throughput figures).
  int64_t prefill_macs(int positions) const;
  const EngineOptions& options() const;
  double load_ms() const;

  // The image's embeddings as the LLM sees them: [image_tokens, hidden_size] row-major (an Error for a
  // text-only model). With
  // `features`, also the vision tower's output [image_tokens, vision_channels] before the projector.
  std::vector<float> embed_image(const ImageInput& image, Timings* timings = nullptr,
                                 std::vector<float>* features = nullptr,
                                 std::vector<float>* pixel_values = nullptr) const;

  // The tokenizer, for /tokenize-style callers: text to ids (special tokens spelled in the text are
  // read as such), ids to text, and one token's bytes (empty for an id that is no token).
  std::vector<int32_t> tokenize(const std::string& text) const;
  std::string detokenize(std::span<const int32_t> ids) const;
  std::string token_bytes(int32_t id) const;
  int token_count() const;  // ids that can be generated

  // The text's token embeddings from the decoder's input table: [tokens, hidden_size] row-major (not
  // trained for retrieval: what the LLM reads, nothing more). `tokens` receives the count.
  std::vector<float> embed_text(const std::string& text, int* tokens = nullptr) const;

  struct Impl;
  Impl& impl() const { return *impl_; }

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A conversation in the model's chat format, its KV cache kept across turns: each turn renders the whole
// conversation and prefills only what the cache does not already hold.
class Session {
 public:
  explicit Session(const Engine& engine);
  ~Session();

  void set_system_prompt(std::string system_prompt);  // default: the chat format's (FastVLM: "You are a helpful assistant.")
  // One user turn, optionally with an image (placed before the text, as FastVLM was trained), and the
  // model's answer. Throws fastvlm::Error before any work when the turn does not fit the context, or the
  // model has no chat format (see complete()) or no vision encoder for the image.
  Generation ask(const std::string& user_text, const ImageInput* image, const GenerateOptions& options,
                 const TextCallback& on_text = {});
  // Answers the last (user) message of a whole conversation, as an OpenAI-style server receives it.
  // The KV cache keeps the longest prefix shared with the previous call (text and image positions
  // alike), so a follow-up request prefills only what is new.
  Generation respond(const std::vector<ChatMessage>& conversation, const GenerateOptions& options,
                     const TextCallback& on_text = {});

  // A raw prompt, no chat template: the text is tokenized as it is (special tokens in it included, as
  // Hugging Face tokenizers do; BOS first where tokenizer_config.json's add_bos_token asks for it). An
  // image goes where the prompt says "<image>". Starts a new conversation (the cached prefix is reused).
  Generation complete(const std::string& prompt, const GenerateOptions& options, const TextCallback& on_text = {},
                      const ImageInput* image = nullptr);

  void reset();
  int context_used() const;

 private:
  struct State;
  const Engine& engine_;
  std::unique_ptr<State> state_;
};

}  // namespace fastvlm
