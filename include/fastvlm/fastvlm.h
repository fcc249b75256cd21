/* fastvlm.cpp C API: the engine behind a stable C ABI, for apps and language bindings.
 *
 *   fastvlm_engine* engine = fastvlm_engine_load("FastVLM-0.5B", NULL);
 *   fastvlm_session* chat = fastvlm_session_new(engine);
 *   fastvlm_generate_params params = fastvlm_generate_default_params();
 *   char* answer = fastvlm_session_ask(chat, "Describe the image.", "cat.jpg", &params, print_piece, NULL);
 *   ...
 *   fastvlm_string_free(answer); fastvlm_session_free(chat); fastvlm_engine_free(engine);
 *
 * fastvlm_session_ask_result() answers the same way but returns a fastvlm_result holding the text, the
 * token ids and (with params.logprobs >= 0) each token's log-probability and the most likely alternatives.
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
  /* Log-probabilities: -1 for none, else 0..20 alternatives reported with each generated token (read
   * them with fastvlm_result_logprobs). */
  int logprobs;
} fastvlm_generate_params;

typedef struct fastvlm_result fastvlm_result;

/* A token and its log-probability under the model: the log-softmax of the raw logits, before penalties,
 * temperature and a schema's mask (what OpenAI reports). bytes (owned by the result) is the token's text,
 * `length` bytes, not NUL-terminated: a token may hold part of a UTF-8 character. */
typedef struct {
  int32_t id;
  float logprob;
  const char* bytes;
  size_t length;
} fastvlm_token_prob;

/* One generated token with the `top_count` most likely tokens of its step, most likely first. */
typedef struct {
  fastvlm_token_prob token;
  const fastvlm_token_prob* top;
  size_t top_count;
} fastvlm_token_logprobs;

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

/* As fastvlm_session_ask, returning the whole result (free it with fastvlm_result_free), NULL on failure. */
fastvlm_result* fastvlm_session_ask_result(fastvlm_session* session, const char* prompt, const char* image_path,
                                           const fastvlm_generate_params* params, fastvlm_text_callback on_text,
                                           void* user_data);
/* The answer, NUL-terminated UTF-8. */
const char* fastvlm_result_text(const fastvlm_result* result);
/* The generated token ids (end-of-turn not included); *count receives how many. */
const int32_t* fastvlm_result_tokens(const fastvlm_result* result, size_t* count);
/* One entry per generated token when params.logprobs was >= 0, else none (*count 0). */
const fastvlm_token_logprobs* fastvlm_result_logprobs(const fastvlm_result* result, size_t* count);
void fastvlm_result_free(fastvlm_result* result);

typedef struct {
  int slots;         /* requests decoded together, one KV cache each */
  int kv_budget;     /* KV positions of all slots, split evenly; 0: the engine's context per slot */
  int prefill_chunk; /* most prompt positions prefilled in one decode step of running requests */
  int queue;         /* requests that may wait for a slot; beyond, submit fails */
} fastvlm_scheduler_params;

typedef struct {
  int slots, active, queued, last_batch;
  uint64_t generated_tokens, completed;
  double tokens_per_second; /* over the decode steps of the last 10 s */
} fastvlm_scheduler_stats;

/* Called once per request, on a scheduler thread, when it ended: `result` the answer (text, token ids,
 * logprobs; valid during the call only, owned by the scheduler) and `cancelled` whether it was cut short by
 * fastvlm_scheduler_cancel or a 0 from the text callback; or `result` NULL and `error` the failure. */
typedef void (*fastvlm_done_callback)(const fastvlm_result* result, int cancelled, const char* error, void* user_data);

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
