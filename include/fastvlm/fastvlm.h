/* fastvlm.cpp C API: the engine behind a stable C ABI, for apps and language bindings.
 *
 *   fastvlm_engine* engine = fastvlm_engine_load("FastVLM-0.5B", NULL);
 *   fastvlm_session* chat = fastvlm_session_new(engine);
 *   fastvlm_generate_params params = fastvlm_generate_default_params();
 *   char* answer = fastvlm_session_ask(chat, "Describe the image.", "cat.jpg", &params, print_piece, NULL);
 *   ...
 *   fastvlm_string_free(answer); fastvlm_session_free(chat); fastvlm_engine_free(engine);
 *
 * Many requests at once (continuous batching: one decoder pass per step serves every running request):
 *
 *   fastvlm_scheduler* scheduler = fastvlm_scheduler_new(engine, NULL);
 *   uint64_t id = fastvlm_scheduler_submit(scheduler, "Describe the image.", "cat.jpg", &params, print_piece,
 *                                          on_done, user_data);
 *   ...
 *   fastvlm_scheduler_free(scheduler);  (ends running requests as cancelled, each on_done called)
 *
 * Functions that can fail return NULL (or 0, or a negative value); fastvlm_last_error() then describes
 * the failure of the calling thread's last call. */
#ifndef FASTVLM_H
#define FASTVLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fastvlm_engine fastvlm_engine;
typedef struct fastvlm_session fastvlm_session;
typedef struct fastvlm_scheduler fastvlm_scheduler;

typedef struct {
  int threads;              /* 0: one per core */
  int context;              /* KV cache positions per session */
  int image_size;           /* 0: the model's native size */
  int64_t max_image_pixels; /* refuse larger images before decoding */
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

typedef struct {
  int slots;         /* requests decoded together, one KV cache each */
  int kv_budget;     /* KV positions of all slots, split evenly; 0: the engine's context per slot */
  int prefill_chunk; /* most prompt positions prefilled between two decode steps of running requests */
  int queue;         /* requests that may wait for a slot; beyond, submit fails */
} fastvlm_scheduler_params;

typedef struct {
  int slots, active, queued, last_batch;
  uint64_t generated_tokens, completed;
  double tokens_per_second; /* over the decode steps of the last 10 s */
} fastvlm_scheduler_stats;

/* Called once per request, on a scheduler thread, when it ended: `text` the whole answer (valid during the
 * call) and `cancelled` whether it was cut short by fastvlm_scheduler_cancel or a 0 from the text callback;
 * or `text` NULL and `error` the failure. */
typedef void (*fastvlm_done_callback)(const char* text, int cancelled, const char* error, void* user_data);

fastvlm_scheduler_params fastvlm_scheduler_default_params(void);
fastvlm_scheduler* fastvlm_scheduler_new(fastvlm_engine* engine, const fastvlm_scheduler_params* params);
/* Ends running requests as cancelled and queued ones with an error (each on_done is called), then frees. */
void fastvlm_scheduler_free(fastvlm_scheduler* scheduler);
/* Queues one user turn (image_path may be NULL) in the chat format. Returns the request's id, or 0 when
 * it is refused before any work (bad input, prompt over a slot's context, queue full): see
 * fastvlm_last_error(). Both callbacks (on_text may be NULL) run on the scheduler's threads. */
uint64_t fastvlm_scheduler_submit(fastvlm_scheduler* scheduler, const char* prompt, const char* image_path,
                                  const fastvlm_generate_params* params, fastvlm_text_callback on_text,
                                  fastvlm_done_callback on_done, void* user_data);
void fastvlm_scheduler_cancel(fastvlm_scheduler* scheduler, uint64_t id);
fastvlm_scheduler_stats fastvlm_scheduler_get_stats(const fastvlm_scheduler* scheduler);

void fastvlm_string_free(char* text);
const char* fastvlm_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* FASTVLM_H */
