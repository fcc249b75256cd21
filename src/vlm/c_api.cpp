// The C API (include/fastvlm/fastvlm.h) as a thin layer over the C++ one: exceptions become NULL
// returns and a per-thread error message.
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "fastvlm/fastvlm.h"
#include "fastvlm/fastvlm.hpp"

struct fastvlm_engine {
  std::unique_ptr<fastvlm::Engine> engine;
};
struct fastvlm_session {
  fastvlm::Session session;
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
          s.seed,          s.presence_penalty, s.frequency_penalty, nullptr};
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
  return guarded([&]() -> fastvlm_session* { return new fastvlm_session{fastvlm::Session(*engine->engine)}; });
}

void fastvlm_session_free(fastvlm_session* session) { delete session; }
void fastvlm_session_reset(fastvlm_session* session) { session->session.reset(); }

char* fastvlm_session_ask(fastvlm_session* session, const char* prompt, const char* image_path,
                          const fastvlm_generate_params* params, fastvlm_text_callback on_text, void* user_data) {
  return guarded([&]() -> char* {
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
    fastvlm::ImageInput image = fastvlm::ImageInput::file(image_path ? image_path : "");
    fastvlm::TextCallback callback;
    if (on_text)
      callback = [&](std::string_view piece) { return on_text(piece.data(), piece.size(), user_data) != 0; };
    fastvlm::Generation answer =
        session->session.ask(prompt ? prompt : "", image_path ? &image : nullptr, options, callback);
    char* out = static_cast<char*>(std::malloc(answer.text.size() + 1));
    if (!out) throw std::bad_alloc();
    std::memcpy(out, answer.text.c_str(), answer.text.size() + 1);
    return out;
  });
}

void fastvlm_string_free(char* text) { std::free(text); }
const char* fastvlm_last_error(void) { return last_error.c_str(); }

}  // extern "C"
