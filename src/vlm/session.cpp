// Session (include/fastvlm/fastvlm.hpp): one conversation and its KV cache, run alone on the calling
// thread: the whole new part of the prompt in one prefill, then one token per decoder step, each chosen
// by the RequestState every driver shares.
#include <algorithm>
#include <optional>

#include "core/error.h"
#include "fastvlm/fastvlm.hpp"
#include "vlm/engine_impl.h"
#include "vlm/prompt.h"
#include "vlm/request_state.h"
#include "vlm/sequence.h"

namespace fastvlm {

// A turn of the conversation a Session holds, with its image's embeddings.
struct HeldTurn {
  text::ChatTurn turn;
  std::optional<EncodedImage> image;
};

struct Session::State {
  explicit State(const Engine::Impl& engine) : slot(engine.decoder().config(), engine.options.context) {}
  SequenceCache slot;
  std::optional<std::string> system_prompt;  // unset: the chat format's default
  std::vector<HeldTurn> history;              // the conversation so far, for ask()

  // The positions of `turns` rendered in the engine's chat format, images spliced in.
  Sequence chat_sequence(const Engine::Impl& engine, std::span<const HeldTurn> turns) const;
  // Answers the last (user) turn of `conversation`, which then, with the answer, is the session's history.
  Generation answer(const Engine::Impl& engine, std::vector<HeldTurn> conversation, const GenerateOptions& options,
                    const TextCallback& on_text, Clock::time_point turn_start, const Timings& timings);
  // Generates after `sequence`, reusing the prefix the cache shares with it.
  Generation run(const Engine::Impl& engine, Sequence sequence, const GenerateOptions& options,
                 const TextCallback& on_text, Clock::time_point turn_start, const Timings& timings);
};

Session::Session(const Engine& engine) : engine_(engine), state_(std::make_unique<State>(engine.impl())) {}
Session::~Session() = default;

void Session::set_system_prompt(std::string system_prompt) { state_->system_prompt = std::move(system_prompt); }

void Session::reset() {
  state_->slot.clear();
  state_->history.clear();
}

int Session::context_used() const { return state_->slot.cache.size(); }

Sequence Session::State::chat_sequence(const Engine::Impl& engine, std::span<const HeldTurn> turns) const {
  std::vector<text::ChatTurn> rendered;
  std::vector<EncodedImage> images;
  for (const HeldTurn& held : turns) {
    rendered.push_back(held.turn);
    if (held.image) images.push_back(*held.image);
  }
  const std::vector<int32_t> ids = chat_prompt_ids(engine, rendered, system_prompt);
  check_fits(engine, ids, int(images.size()), slot.cache.capacity());
  Sequence sequence;
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
  const std::vector<text::ChatTurn> chat_turns = conversation_turns(conversation);
  engine.chat_format();
  const auto image_count = std::count_if(conversation.begin(), conversation.end(),
                                         [](const ChatMessage& message) { return message.image.has_value(); });
  Timings timings;
  std::vector<HeldTurn> turns;
  for (size_t i = 0; i < conversation.size(); ++i) {
    HeldTurn turn{chat_turns[i], std::nullopt};
    if (conversation[i].image) turn.image = engine.encode(*conversation[i].image, image_count == 1 ? &timings : nullptr);
    turns.push_back(std::move(turn));
  }
  return state.answer(engine, std::move(turns), options, on_text, turn_start, timings);
}

Generation Session::complete(const std::string& prompt, const GenerateOptions& options, const TextCallback& on_text,
                             const ImageInput* image) {
  const Engine::Impl& engine = engine_.impl();
  State& state = *state_;
  const auto turn_start = Clock::now();
  const std::vector<int32_t> ids = raw_prompt_ids(engine, prompt);
  check_fits(engine, ids, image ? 1 : 0, state.slot.cache.capacity());
  if (ids.empty()) throw Error("the prompt is empty");
  Timings timings;
  std::vector<EncodedImage> images;
  if (image) images.push_back(engine.encode(*image, &timings));
  Sequence sequence;
  sequence.add_prompt(ids, images, engine.info.image_tokens, engine.info.hidden_size);
  state.history.clear();  // a raw prompt is no conversation to continue
  return state.run(engine, std::move(sequence), options, on_text, turn_start, timings);
}

Generation Session::State::answer(const Engine::Impl& engine, std::vector<HeldTurn> conversation,
                                  const GenerateOptions& options, const TextCallback& on_text,
                                  Clock::time_point turn_start, const Timings& timings) {
  Generation result = run(engine, chat_sequence(engine, conversation), options, on_text, turn_start, timings);
  conversation.push_back({{"assistant", result.text, false}, std::nullopt});
  history = std::move(conversation);
  return result;
}

Generation Session::State::run(const Engine::Impl& engine, Sequence sequence, const GenerateOptions& options,
                               const TextCallback& on_text, Clock::time_point turn_start, const Timings& timings) {
  RequestState request(engine, options, on_text);
  engine.use_threads();
  request.start(std::move(sequence), slot, turn_start, timings);
  const TextDecoder& decoder = engine.decoder();
  const int hidden = engine.info.hidden_size;
  const int positions = request.prefill_remaining();
  std::vector<float> embeddings(size_t(positions) * hidden);
  request.prefill_embeddings(positions, embeddings.data());
  std::vector<float> logits = decoder.forward(embeddings.data(), positions, slot.cache);
  request.prefilled(positions);
  std::vector<float> step_embedding(hidden);
  while (request.on_logits(logits)) {
    request.next_embedding(step_embedding.data());
    logits = decoder.forward(step_embedding.data(), 1, slot.cache);
    request.fed();
  }
  return request.finish();
}

}  // namespace fastvlm
