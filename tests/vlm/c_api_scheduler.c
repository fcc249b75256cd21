/* The C API's scheduler from a C program: three requests (one with an image) run together, each answer
 * equal to the session's for the same turn, the streamed pieces adding up to it; a cancelled one still
 * reports its end; a prompt over a slot's context is refused with a message.
 * Usage: c_api_scheduler MODEL_DIR IMAGE */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastvlm/fastvlm.h"

typedef struct {
  char streamed[4096];
  char answer[4096];
  int done, cancelled;
  char error[512];
} request_state;

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ended = PTHREAD_COND_INITIALIZER;

static int collect(const char* piece, size_t length, void* user_data) {
  request_state* state = (request_state*)user_data;
  size_t used = strlen(state->streamed);
  if (used + length >= sizeof state->streamed) return 0;
  memcpy(state->streamed + used, piece, length);
  state->streamed[used + length] = '\0';
  return 1;
}

static void on_done(const fastvlm_result* result, int cancelled, const char* error, void* user_data) {
  request_state* state = (request_state*)user_data;
  pthread_mutex_lock(&mutex);
  if (result) snprintf(state->answer, sizeof state->answer, "%s", fastvlm_result_text(result));
  if (error) snprintf(state->error, sizeof state->error, "%s", error);
  state->cancelled = cancelled;
  state->done = 1;
  pthread_cond_broadcast(&ended);
  pthread_mutex_unlock(&mutex);
}

static void wait_done(request_state* state) {
  pthread_mutex_lock(&mutex);
  while (!state->done) pthread_cond_wait(&ended, &mutex);
  pthread_mutex_unlock(&mutex);
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  /* float32: the path whose batched answers equal the single-stream ones token for token (the quantised
   * ones may sum a batch in another order). */
  fastvlm_engine_params engine_params = fastvlm_engine_default_params();
  engine_params.dtype = "f32";
  fastvlm_engine* engine = fastvlm_engine_load(argv[1], &engine_params);
  if (!engine) {
    fprintf(stderr, "load failed: %s\n", fastvlm_last_error());
    return 1;
  }
  const char* prompts[3] = {"Describe the image.", "Write a short poem.", "What colours do you see?"};
  const char* images[3] = {argv[2], NULL, argv[2]};
  fastvlm_generate_params params = fastvlm_generate_default_params();
  params.max_tokens = 12;

  /* The answers alone. */
  char* alone[3];
  fastvlm_session* session = fastvlm_session_new(engine);
  for (int i = 0; i < 3; ++i) {
    fastvlm_session_reset(session);
    alone[i] = fastvlm_session_ask(session, prompts[i], images[i], &params, NULL, NULL);
    if (!alone[i]) {
      fprintf(stderr, "session: %s\n", fastvlm_last_error());
      return 1;
    }
  }
  fastvlm_session_free(session);

  int ok = 1;
  fastvlm_scheduler_params scheduler_params = fastvlm_scheduler_default_params();
  scheduler_params.slots = 3;
  scheduler_params.prefill_chunk = 5;
  fastvlm_scheduler* scheduler = fastvlm_scheduler_new(engine, &scheduler_params);
  if (!scheduler) {
    fprintf(stderr, "scheduler: %s\n", fastvlm_last_error());
    return 1;
  }
  static request_state states[4];
  for (int i = 0; i < 3; ++i)
    if (fastvlm_scheduler_submit(scheduler, prompts[i], images[i], &params, collect, on_done, &states[i]) == 0) {
      fprintf(stderr, "submit %d: %s\n", i, fastvlm_last_error());
      return 1;
    }
  fastvlm_generate_params long_params = params;
  long_params.max_tokens = 200;
  uint64_t cancelled = fastvlm_scheduler_submit(scheduler, prompts[1], NULL, &long_params, NULL, on_done, &states[3]);
  fastvlm_scheduler_cancel(scheduler, cancelled);
  for (int i = 0; i < 4; ++i) wait_done(&states[i]);
  for (int i = 0; i < 3; ++i)
    if (strcmp(states[i].answer, alone[i]) != 0 || strcmp(states[i].streamed, alone[i]) != 0 || states[i].cancelled) {
      fprintf(stderr, "request %d: '%s' (streamed '%s') alone '%s' %s\n", i, states[i].answer, states[i].streamed,
              alone[i], states[i].error);
      ok = 0;
    }
  if (!states[3].cancelled || states[3].error[0]) {
    fprintf(stderr, "the cancelled request did not end as cancelled (%s)\n", states[3].error);
    ok = 0;
  }
  fastvlm_scheduler_stats stats = fastvlm_scheduler_get_stats(scheduler);
  if (stats.slots != 3 || stats.completed != 4 || stats.generated_tokens == 0) {
    fprintf(stderr, "stats: slots %d completed %llu generated %llu\n", stats.slots, (unsigned long long)stats.completed,
            (unsigned long long)stats.generated_tokens);
    ok = 0;
  }
  fastvlm_scheduler_free(scheduler);

  /* A prompt over a slot's share of the budget is refused before any work, with a message. */
  scheduler_params.slots = 2;
  scheduler_params.kv_budget = 32;
  scheduler = fastvlm_scheduler_new(engine, &scheduler_params);
  if (!scheduler || fastvlm_scheduler_submit(scheduler, "Describe the image in great detail, please, with every colour.",
                                             NULL, &params, NULL, on_done, &states[0]) != 0 ||
      strstr(fastvlm_last_error(), "does not fit") == NULL) {
    fprintf(stderr, "an over-long prompt was not refused: '%s'\n", fastvlm_last_error());
    ok = 0;
  }
  fastvlm_scheduler_free(scheduler);
  for (int i = 0; i < 3; ++i) fastvlm_string_free(alone[i]);
  fastvlm_engine_free(engine);
  printf("%s\n", ok ? "c api scheduler ok" : "c api scheduler FAILED");
  return ok ? 0 : 1;
}
