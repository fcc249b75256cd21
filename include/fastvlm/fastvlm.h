/* fastvlm.cpp C API: the engine behind a stable C ABI, for apps and language bindings.
 *
 *   fastvlm_engine* engine = fastvlm_engine_load("FastVLM-0.5B", NULL);
 *   fastvlm_session* chat = fastvlm_session_new(engine);
 *   fastvlm_generate_params params = fastvlm_generate_default_params();
 *   char* answer = fastvlm_session_ask(chat, "Describe the image.", "cat.jpg", &params, print_piece, NULL);
 *   ...
 *   fastvlm_string_free(answer); fastvlm_session_free(chat); fastvlm_engine_free(engine);
 *
 * Functions that can fail return NULL (or a negative value); fastvlm_last_error() then describes the
 * failure of the calling thread's last call. */
#ifndef FASTVLM_H
#define FASTVLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fastvlm_engine fastvlm_engine;
typedef struct fastvlm_session fastvlm_session;

typedef struct {
  int threads;              /* 0: one per core */
  int context;              /* KV cache positions per session */
  int image_size;           /* 0: the model's native size */
  int64_t max_image_pixels; /* refuse larger images before decoding */
  /* Compute precision: "auto" (or NULL: the fastest path within the README's accuracy bounds), "f32" (the
   * reference), "bf16" or "int8". */
  const char* dtype;
} fastvlm_engine_params;

typedef struct {
  int max_tokens;
  float temperature; /* 0: greedy */
  int top_k;
  float top_p;
  float min_p;
  float repeat_penalty;
  int repeat_last_n;
  uint64_t seed;
  float presence_penalty;  /* OpenAI's: subtracted once from every token already in the answer */
  float frequency_penalty; /* OpenAI's: subtracted per earlier occurrence in the answer */
  /* Structured output: NULL for free text, else a JSON Schema (text; "{\"type\":\"object\"}" for any JSON
   * object) the answer is constrained to; an invalid or unsupported one fails the call with a message. */
  const char* json_schema;
} fastvlm_generate_params;

/* Receives each printable piece of the answer (UTF-8, not NUL-terminated). Return 0 to cancel. */
typedef int (*fastvlm_text_callback)(const char* piece, size_t length, void* user_data);

fastvlm_engine_params fastvlm_engine_default_params(void);
fastvlm_generate_params fastvlm_generate_default_params(void);

fastvlm_engine* fastvlm_engine_load(const char* model_dir, const fastvlm_engine_params* params);
void fastvlm_engine_free(fastvlm_engine* engine);
int fastvlm_engine_image_tokens(const fastvlm_engine* engine);
int fastvlm_engine_hidden_size(const fastvlm_engine* engine);

fastvlm_session* fastvlm_session_new(fastvlm_engine* engine);
void fastvlm_session_free(fastvlm_session* session);
void fastvlm_session_reset(fastvlm_session* session);
/* One user turn, image_path may be NULL. Returns the whole answer (free it with fastvlm_string_free). */
char* fastvlm_session_ask(fastvlm_session* session, const char* prompt, const char* image_path,
                          const fastvlm_generate_params* params, fastvlm_text_callback on_text, void* user_data);

void fastvlm_string_free(char* text);
const char* fastvlm_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* FASTVLM_H */
