#pragma once
// One request's generation as a state machine, driven step by step by whoever runs the decoder: a Session
// runs one request alone, the Scheduler many together (prefill chunks and batched decode steps). The
// sampling (forced tokens, JSON schema mask, penalties, stop strings, logprobs, streaming) exists only
// here, so a request gives the same answer whichever drives it.
//
//   RequestState request(engine, options, on_text);      // checks the options before any work
//   request.start(sequence, slot, turn_start, timings);  // keeps the prefix the slot's cache shares
//   while (request.prefill_remaining() > 0) { prefill_embeddings(n, ...); decoder.forward(n); prefilled(n); }
//   while (request.on_logits(logits)) { next_embedding(...); decoder.forward(1) or forward_batch; fed(); }
//   Generation answer = request.finish();
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "fastvlm/fastvlm.hpp"
#include "llm/sampling.h"
#include "text/json_schema.h"
#include "text/tokenizer.h"
#include "vlm/engine_impl.h"
#include "vlm/sequence.h"
#include "vlm/stop_string_filter.h"

namespace fastvlm {

class RequestState {
 public:
  // Checks `options` (max_tokens, forced tokens, logprobs, sampling parameters) and compiles the JSON
  // schema, throwing fastvlm::Error before any model work.
  RequestState(const Engine::Impl& engine, const GenerateOptions& options, TextCallback on_text);

  // Generates after `sequence` in `slot`: keeps the longest prefix the slot's cache shares with it, but
  // leaves at least one position to prefill, so that there are logits to sample from.
  void start(Sequence sequence, SequenceCache& slot, Clock::time_point turn_start, const Timings& timings);

  // Positions of the prompt still to run through the decoder.
  int prefill_remaining() const { return sequence_.size() - next_position_; }
  // Embeddings [count, hidden] of the next `count` positions to prefill: runs of text through the
  // embedding table, image rows copied.
  void prefill_embeddings(int count, float* out) const;
  // The decoder ran those `count` positions into the slot's cache.
  void prefilled(int count);

  // Takes the logits of the last position run (the prompt's last, or the token fed last) and chooses the
  // next token, streaming its text. False once the generation has ended.
  bool on_logits(std::span<const float> logits);
  // The embedding [hidden] of the token just chosen, to run next.
  void next_embedding(float* out);
  // That token was run into the slot's cache.
  void fed();

  // Ends the generation as cancelled, between steps.
  void cancel() { result_.stop_reason = StopReason::Cancelled; }
  int generated_tokens() const { return int(result_.token_ids.size()); }
  SequenceCache& slot() const { return *slot_; }
  // The answer; call once, after on_logits returned false (or cancel()).
  Generation finish();

 private:
  void emit(const std::string& piece);
  // Emits what the stream decoder and the stop-string filter still hold, at a normal end; false.
  bool flush();
  int32_t choose(std::span<const float> logits);

  const Engine::Impl& engine_;
  const GenerateOptions options_;
  const TextCallback on_text_;
  const bool forced_;
  const int max_tokens_;
  std::shared_ptr<const text::JsonConstraint> constraint_;
  std::optional<text::JsonMatcher> matcher_;
  Sampler sampler_;
  bool adjust_ = false;  // logits need penalties, biases or the schema's mask before sampling
  std::vector<float> adjusted_;

  Sequence sequence_;
  SequenceCache* slot_ = nullptr;
  int next_position_ = 0;  // of sequence_, the first not yet in the slot's cache
  Clock::time_point turn_start_, prefill_start_, step_start_;
  text::StreamDecoder decoder_;
  StopStringFilter filter_;
  Generation result_;
  Timings timings_;
  double decode_ms_ = 0;
  int decode_steps_ = 0;
  bool ended_ = false;
};

}  // namespace fastvlm
