// The C API (include/fastvlm/fastvlm.h) as a thin layer over the C++ one: exceptions become NULL
// returns and a per-thread error message.
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "fastvlm/fastvlm.h"
#include "fastvlm/fastvlm.hpp"
#include "fastvlm/scheduler.hpp"

struct fastvlm_engine {
  std::unique_ptr<fastvlm::Engine> engine;
};
struct fastvlm_session {
  fastvlm::Session session;
  const fastvlm::Engine* engine;
};
struct fastvlm_result {
  std::string text;
  std::vector<int32_t> tokens;
  std::string bytes;                     // the bytes of every token in `logprobs`, end to end
  std::vector<fastvlm_token_prob> top;   // the alternatives of every entry, entry after entry
  std::vector<fastvlm_token_logprobs> logprobs;
};
struct fastvlm_scheduler {
  std::unique_ptr<fastvlm::Scheduler> scheduler;
  const fastvlm::Engine* engine;
};

namespace {

thread_local std::string last_error;

template <typename F>
auto guarded(F&& body) -> decltype(body()) {
  try {
    last_error.clear();
    return body();
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown error";
  }
  return {};
}

fastvlm::GenerateOptions generate_options(const fastvlm_generate_params* params) {
  fastvlm_generate_params p = params ? *params : fastvlm_generate_default_params();
  fastvlm::GenerateOptions options;
  options.max_tokens = p.max_tokens;
  options.sampling.temperature = p.temperature;
  options.sampling.top_k = p.top_k;
  options.sampling.top_p = p.top_p;
  options.sampling.min_p = p.min_p;
  options.sampling.repeat_penalty = p.repeat_penalty;
  options.sampling.repeat_last_n = p.repeat_last_n;
  options.sampling.seed = p.seed;
  options.sampling.presence_penalty = p.presence_penalty;
  options.sampling.frequency_penalty = p.frequency_penalty;
  if (p.json_schema) options.json_schema = p.json_schema;
  options.logprobs = p.logprobs;
  return options;
}

fastvlm::TextCallback text_callback(fastvlm_text_callback on_text, void* user_data) {
  if (!on_text) return {};
  return [on_text, user_data](std::string_view piece) { return on_text(piece.data(), piece.size(), user_data) != 0; };
}

fastvlm::Generation ask(fastvlm_session* session, const char* prompt, const char* image_path,
                        const fastvlm_generate_params* params, fastvlm_text_callback on_text, void* user_data) {
  fastvlm::ImageInput image = fastvlm::ImageInput::file(image_path ? image_path : "");
  return session->session.ask(prompt ? prompt : "", image_path ? &image : nullptr, generate_options(params),
                              text_callback(on_text, user_data));
}

// The C view of a generation: entries point into the result's own byte buffer, so their pointers are set
// only once every token's bytes have been appended.
std::unique_ptr<fastvlm_result> make_result(fastvlm::Generation&& generation, const fastvlm::Engine& engine) {
  auto result = std::make_unique<fastvlm_result>();
  result->text = std::move(generation.text);
  result->tokens = std::move(generation.token_ids);
  std::vector<size_t> offsets;  // of each token's bytes, in the order the entries are visited
  auto prob = [&](int32_t id, float logprob) {
    const std::string bytes = engine.token_bytes(id);
    offsets.push_back(result->bytes.size());
    result->bytes += bytes;
    return fastvlm_token_prob{id, logprob, nullptr, bytes.size()};
  };
  for (const fastvlm::TokenLogprob& token : generation.logprobs) {
    result->logprobs.push_back({prob(token.id, token.logprob), nullptr, token.top.size()});
    for (const auto& [id, logprob] : token.top) result->top.push_back(prob(id, logprob));
  }
  size_t next = 0, top = 0;
  for (fastvlm_token_logprobs& entry : result->logprobs) {
    entry.token.bytes = result->bytes.data() + offsets[next++];
    entry.top = result->top.data() + top;
    for (size_t i = 0; i < entry.top_count; ++i) result->top[top++].bytes = result->bytes.data() + offsets[next++];
  }
  return result;
}

}  // namespace

extern "C" {

fastvlm_engine_params fastvlm_engine_default_params(void) {
  fastvlm::EngineOptions d;
  return {d.threads, d.context, d.image_size, d.max_image_pixels, fastvlm::precision_name(d.precision)};
}

fastvlm_generate_params fastvlm_generate_default_params(void) {
  fastvlm::GenerateOptions d;
  const fastvlm::SamplingParams& s = d.sampling;
  return {d.max_tokens,    s.temperature,      s.top_k, s.top_p, s.min_p, s.repeat_penalty, s.repeat_last_n,
          s.seed,          s.presence_penalty, s.frequency_penalty, nullptr, d.logprobs};
}

fastvlm_engine* fastvlm_engine_load(const char* model_dir, const fastvlm_engine_params* params) {
  return guarded([&]() -> fastvlm_engine* {
    fastvlm_engine_params p = params ? *params : fastvlm_engine_default_params();
    fastvlm::EngineOptions options;
    options.threads = p.threads;
    options.context = p.context;
    options.image_size = p.image_size;
    options.max_image_pixels = p.max_image_pixels;
    if (p.dtype) options.precision = fastvlm::parse_precision(p.dtype);
    return new fastvlm_engine{fastvlm::Engine::load(model_dir ? model_dir : "", options)};
  });
}

void fastvlm_engine_free(fastvlm_engine* engine) { delete engine; }
int fastvlm_engine_image_tokens(const fastvlm_engine* engine) { return engine->engine->info().image_tokens; }
int fastvlm_engine_hidden_size(const fastvlm_engine* engine) { return engine->engine->info().hidden_size; }

fastvlm_session* fastvlm_session_new(fastvlm_engine* engine) {
  return guarded([&]() -> fastvlm_session* {
    return new fastvlm_session{fastvlm::Session(*engine->engine), engine->engine.get()};
  });
}

void fastvlm_session_free(fastvlm_session* session) { delete session; }
void fastvlm_session_reset(fastvlm_session* session) { session->session.reset(); }

char* fastvlm_session_ask(fastvlm_session* session, const char* prompt, const char* image_path,
                          const fastvlm_generate_params* params, fastvlm_text_callback on_text, void* user_data) {
  return guarded([&]() -> char* {
    const std::string text = ask(session, prompt, image_path, params, on_text, user_data).text;
    char* out = static_cast<char*>(std::malloc(text.size() + 1));
    if (!out) throw std::bad_alloc();
    std::memcpy(out, text.c_str(), text.size() + 1);
    return out;
  });
}

fastvlm_result* fastvlm_session_ask_result(fastvlm_session* session, const char* prompt, const char* image_path,
                                           const fastvlm_generate_params* params, fastvlm_text_callback on_text,
                                           void* user_data) {
  return guarded([&]() -> fastvlm_result* {
    return make_result(ask(session, prompt, image_path, params, on_text, user_data), *session->engine).release();
  });
}

const char* fastvlm_result_text(const fastvlm_result* result) { return result->text.c_str(); }

const int32_t* fastvlm_result_tokens(const fastvlm_result* result, size_t* count) {
  *count = result->tokens.size();
  return result->tokens.data();
}

const fastvlm_token_logprobs* fastvlm_result_logprobs(const fastvlm_result* result, size_t* count) {
  *count = result->logprobs.size();
  return result->logprobs.data();
}

void fastvlm_result_free(fastvlm_result* result) { delete result; }

fastvlm_scheduler_params fastvlm_scheduler_default_params(void) {
  fastvlm::SchedulerOptions d;
  return {d.slots, d.kv_budget, d.prefill_chunk, d.queue};
}

fastvlm_scheduler* fastvlm_scheduler_new(fastvlm_engine* engine, const fastvlm_scheduler_params* params) {
  return guarded([&]() -> fastvlm_scheduler* {
    const fastvlm_scheduler_params p = params ? *params : fastvlm_scheduler_default_params();
    fastvlm::SchedulerOptions options;
    options.slots = p.slots;
    options.kv_budget = p.kv_budget;
    options.prefill_chunk = p.prefill_chunk;
    options.queue = p.queue;
    return new fastvlm_scheduler{std::make_unique<fastvlm::Scheduler>(*engine->engine, options), engine->engine.get()};
  });
}

void fastvlm_scheduler_free(fastvlm_scheduler* scheduler) { delete scheduler; }

uint64_t fastvlm_scheduler_submit(fastvlm_scheduler* scheduler, const char* prompt, const char* image_path,
                                  const fastvlm_generate_params* params, fastvlm_text_callback on_text,
                                  fastvlm_done_callback on_done, void* user_data) {
  return guarded([&]() -> uint64_t {
    fastvlm::ScheduledRequest request;
    request.conversation.push_back({"user", prompt ? prompt : "", std::nullopt});
    if (image_path) request.conversation.back().image = fastvlm::ImageInput::file(image_path);
    request.options = generate_options(params);
    return scheduler->scheduler->submit(
        std::move(request), text_callback(on_text, user_data),
        [on_done, user_data, &engine = *scheduler->engine](fastvlm::Generation answer, std::exception_ptr error) {
          if (!on_done) return;
          if (!error) {
            const int cancelled = answer.stop_reason == fastvlm::StopReason::Cancelled;
            return on_done(make_result(std::move(answer), engine).get(), cancelled, nullptr, user_data);
          }
          std::string message = "unknown error";
          try {
            std::rethrow_exception(error);
          } catch (const std::exception& e) {
            message = e.what();
          } catch (...) {
          }
          on_done(nullptr, 0, message.c_str(), user_data);
        });
  });
}

void fastvlm_scheduler_cancel(fastvlm_scheduler* scheduler, uint64_t id) { scheduler->scheduler->cancel(id); }

fastvlm_scheduler_stats fastvlm_scheduler_get_stats(const fastvlm_scheduler* scheduler) {
  const fastvlm::SchedulerStats s = scheduler->scheduler->stats();
  return {s.slots, s.active, s.queued, s.last_batch, s.generated_tokens, s.completed, s.tokens_per_second};
}

void fastvlm_string_free(char* text) { std::free(text); }
const char* fastvlm_last_error(void) { return last_error.c_str(); }

}  // extern "C"
