#include "vlm/request_state.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace fastvlm {
namespace {

const GenerateOptions& checked(const Engine::Impl& engine, const GenerateOptions& options) {
  if (options.max_tokens < 0) throw Error("max_tokens must be >= 0");
  for (int32_t id : options.forced_tokens)
    if (id < 0 || size_t(id) >= engine.sampled_vocab)
      throw Error("forced token " + std::to_string(id) + " is outside the vocabulary [0, " +
                  std::to_string(engine.sampled_vocab) + ")");
  if (options.logprobs > 20) throw Error("logprobs must be between 0 and 20, got " + std::to_string(options.logprobs));
  return options;
}

}  // namespace

RequestState::RequestState(const Engine::Impl& engine, const GenerateOptions& options, TextCallback on_text)
    : engine_(engine),
      options_(checked(engine, options)),
      on_text_(std::move(on_text)),
      forced_(!options.forced_tokens.empty()),
      max_tokens_(forced_ ? std::min(options.max_tokens, int(options.forced_tokens.size())) : options.max_tokens),
      sampler_(options.sampling),
      decoder_(*engine.tokenizer),
      filter_(options.stop) {
  // Compiled before any model work, so a bad schema fails fast; teacher forcing ignores it.
  if (!options_.json_schema.empty() && !forced_) {
    constraint_ = engine.json_constraint(options_.json_schema);
    matcher_.emplace(constraint_->start());
  }
  const SamplingParams& sampling = options_.sampling;
  adjust_ = constraint_ || !sampling.logit_bias.empty() || sampling.presence_penalty != 0 ||
            sampling.frequency_penalty != 0;
}

void RequestState::start(Sequence sequence, SequenceCache& slot, Clock::time_point turn_start, const Timings& timings) {
  sequence_ = std::move(sequence);
  slot_ = &slot;
  turn_start_ = turn_start;
  timings_ = timings;
  next_position_ = std::min(slot.shared_prefix(sequence_), sequence_.size() - 1);
  slot.truncate(next_position_);
  result_.prompt_tokens = prefill_remaining();
  result_.cached_tokens = next_position_;
  result_.prompt_ids = sequence_.prompt_ids;
  result_.stop_reason = StopReason::MaxTokens;
  prefill_start_ = Clock::now();
}

void RequestState::prefill_embeddings(int count, float* out) const {
  const int hidden = engine_.info.hidden_size;
  const int end = next_position_ + count;
  for (int p = next_position_; p < end;) {
    float* row = out + size_t(p - next_position_) * hidden;
    if (sequence_.rows[p]) {
      std::memcpy(row, sequence_.rows[p], size_t(hidden) * sizeof(float));
      ++p;
      continue;
    }
    int run_end = p;
    while (run_end < end && !sequence_.rows[run_end]) ++run_end;
    engine_.decoder().embed(std::span(sequence_.ids).subspan(p, run_end - p), row);
    p = run_end;
  }
}

void RequestState::prefilled(int count) {
  const auto from = size_t(next_position_), to = from + size_t(count);
  slot_->keys.insert(slot_->keys.end(), sequence_.keys.begin() + from, sequence_.keys.begin() + to);
  slot_->tokens.insert(slot_->tokens.end(), sequence_.ids.begin() + from, sequence_.ids.begin() + to);
  next_position_ += count;
  if (prefill_remaining() == 0) timings_.prefill_ms = ms_since(prefill_start_);
}

int32_t RequestState::choose(std::span<const float> logits) {
  const size_t n = result_.token_ids.size();
  if (forced_) return options_.forced_tokens[n];
  if (!adjust_) return sampler_.sample(logits, slot_->tokens);
  adjusted_.assign(logits.begin(), logits.end());
  sampler_.apply_penalties(adjusted_, result_.token_ids);
  if (constraint_) {
    // Only tokens that keep the answer a prefix of a matching document; end-of-turn (not in the trie)
    // only once the document is complete.
    auto mask = constraint_->allowed(*matcher_);
    const bool complete = matcher_->complete();
    if (mask->allowed == 0 && !complete) return -1;  // the matcher has no dead ends; never taken
    std::vector<std::pair<int32_t, float>> stops;
    for (int32_t id : engine_.stop_ids)
      if (complete && size_t(id) < adjusted_.size()) stops.emplace_back(id, adjusted_[size_t(id)]);
    for (size_t id = 0; id < adjusted_.size(); ++id)
      if (!mask->test(int32_t(id))) adjusted_[id] = -INFINITY;
    for (const auto& [id, logit] : stops) adjusted_[size_t(id)] = logit;
  }
  return sampler_.sample(adjusted_, slot_->tokens);
}

bool RequestState::on_logits(std::span<const float> logits) {
  if (step_start_ != Clock::time_point{}) {
    decode_ms_ += ms_since(step_start_);
    ++decode_steps_;
    step_start_ = {};
  }
  const int n = generated_tokens();
  if (ended_ || n >= max_tokens_ || result_.stop_reason == StopReason::Cancelled) {
    ended_ = true;
    return false;
  }
  // Rows past the tokenizer (the embedding is padded) are never sampled: the reference resizes the
  // embedding to the tokenizer's length.
  const auto sampled_logits = logits.first(engine_.sampled_vocab);
  const int32_t token = choose(sampled_logits);
  if (n == 0) timings_.ttft_ms = ms_since(turn_start_);
  ended_ = true;  // unless the checks below let the generation go on
  if (token < 0) return flush();
  if (std::find(engine_.stop_ids.begin(), engine_.stop_ids.end(), token) != engine_.stop_ids.end()) {
    result_.stop_reason = StopReason::EndOfTurn;
    return flush();
  }
  if (matcher_ && !matcher_->feed(engine_.tokenizer->token_bytes(token)))
    throw Error("internal: token " + std::to_string(token) + " was sampled outside the JSON schema's mask");
  result_.token_ids.push_back(token);
  if (options_.logprobs >= 0) result_.logprobs.push_back(token_logprob(sampled_logits, token, options_.logprobs));
  if (options_.keep_logits) result_.step_logits.emplace_back(sampled_logits.begin(), sampled_logits.end());
  emit(filter_.push(decoder_.push(token)));
  if (filter_.stopped()) result_.stop_reason = StopReason::StopString;
  if (result_.stop_reason == StopReason::Cancelled || result_.stop_reason == StopReason::StopString) return false;
  if (n + 1 == max_tokens_ || slot_->cache.size() + 1 >= slot_->cache.capacity()) return flush();
  ended_ = false;
  return true;
}

void RequestState::next_embedding(float* out) {
  step_start_ = Clock::now();
  engine_.decoder().embed(std::span(&result_.token_ids.back(), 1), out);
}

void RequestState::fed() {
  const int32_t token = result_.token_ids.back();
  slot_->keys.push_back(uint32_t(token));
  slot_->tokens.push_back(token);
}

void RequestState::emit(const std::string& piece) {
  if (!piece.empty() && on_text_ && !on_text_(piece)) result_.stop_reason = StopReason::Cancelled;
}

bool RequestState::flush() {
  emit(filter_.push(decoder_.flush()) + filter_.finish());
  return false;
}

Generation RequestState::finish() {
  result_.text = filter_.text();
  timings_.load_ms = engine_.load_ms;
  timings_.decode_ms_per_token = decode_steps_ ? decode_ms_ / decode_steps_ : 0;
  result_.timings = timings_;
  return std::move(result_);
}

}  // namespace fastvlm
