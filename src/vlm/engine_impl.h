#pragma once
// What include/fastvlm/fastvlm.hpp's Engine holds, for the parts of the pipeline built on it (Session,
// Scheduler, the per-request generation state): the model, its tokenizer and chat format, the image and
// schema caches.
#include <omp.h>

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fastvlm/fastvlm.hpp"
#include "llm/text_decoder.h"
#include "models/model.h"
#include "text/chat_format.h"
#include "text/json_schema.h"
#include "text/tokenizer.h"
#include "text/tokenizer_config.h"

namespace fastvlm {

using Clock = std::chrono::steady_clock;

inline double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// An image's embeddings [image_tokens, hidden] with the hash that identifies it in KV-cache prefixes.
struct EncodedImage {
  uint64_t key;
  std::shared_ptr<const std::vector<float>> embeddings;
};

struct Engine::Impl {
  // `threads` > 0: the OpenMP threads the encode runs on (default: use_threads()).
  EncodedImage encode(const ImageInput& input, Timings* timings, std::vector<float>* features = nullptr,
                      std::vector<float>* pixel_values = nullptr, int threads = 0) const;
  // The chat format, or the reason there is none (no chat_template, or one of an unknown family): raw
  // prompts still work.
  const text::ChatFormat& chat_format() const;
  const TextDecoder& decoder() const { return *model->decoder; }
  // OpenMP's thread count is per calling thread: every entry point that computes sets it for its caller
  // (a server worker, a caption prefetch thread), not only the thread that loaded the engine.
  // `threads` > 0 overrides the engine's count for this caller (the scheduler shares the cores between
  // an image encode and the running streams).
  void use_threads(int threads = 0) const {
    if (threads > 0)
      omp_set_num_threads(threads);
    else if (options.threads > 0)
      omp_set_num_threads(options.threads);
  }
  // The threads a computation gets by default: --threads, else one per core.
  int thread_count() const { return options.threads > 0 ? options.threads : omp_get_num_procs(); }

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

}  // namespace fastvlm
