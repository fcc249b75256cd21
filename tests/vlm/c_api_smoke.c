/* The C API from a C program: load the tiny model, ask about an image with a streaming callback, and
 * check that the streamed pieces add up to the returned answer, that a result's log-probabilities are
 * consistent (greedy picks the most likely token, alternatives sorted, their bytes spell the answer), and
 * that errors come back as NULL with a message. Usage: c_api_smoke MODEL_DIR IMAGE */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fastvlm/fastvlm.h"

/* A greedy answer with 3 alternatives per token: each token is its step's most likely one, the alternatives
 * come most likely first with probabilities summing to at most 1, and the tokens' bytes spell the text. */
static int check_logprobs(fastvlm_session* session, const char* image) {
  fastvlm_generate_params params = fastvlm_generate_default_params();
  params.max_tokens = 8;
  params.logprobs = 3;
  fastvlm_session_reset(session);
  fastvlm_result* result = fastvlm_session_ask_result(session, "Describe the image.", image, &params, NULL, NULL);
  if (!result) {
    fprintf(stderr, "ask_result failed: %s\n", fastvlm_last_error());
    return 0;
  }
  size_t tokens = 0, entries = 0;
  const int32_t* ids = fastvlm_result_tokens(result, &tokens);
  const fastvlm_token_logprobs* logprobs = fastvlm_result_logprobs(result, &entries);
  int ok = tokens > 0 && entries == tokens;
  char spelled[4096] = "";
  size_t used = 0;
  for (size_t i = 0; ok && i < entries; ++i) {
    const fastvlm_token_logprobs* entry = &logprobs[i];
    double total = 0;
    ok = entry->token.id == ids[i] && entry->token.logprob <= 0 && entry->top_count == 3 &&
         entry->top[0].id == entry->token.id && entry->top[0].logprob == entry->token.logprob &&
         entry->top[0].length == entry->token.length &&
         memcmp(entry->top[0].bytes, entry->token.bytes, entry->token.length) == 0;
    for (size_t k = 0; ok && k < entry->top_count; ++k) {
      total += exp(entry->top[k].logprob);
      if (k > 0 && (entry->top[k].logprob > entry->top[k - 1].logprob || entry->top[k].id == entry->top[k - 1].id)) ok = 0;
    }
    if (total > 1.0001) ok = 0;
    if (!ok) fprintf(stderr, "token %zu: id %d logprob %g, inconsistent alternatives\n", i, entry->token.id, entry->token.logprob);
    if (used + entry->token.length < sizeof spelled) {
      memcpy(spelled + used, entry->token.bytes, entry->token.length);
      used += entry->token.length;
      spelled[used] = '\0';
    }
  }
  if (ok && strcmp(spelled, fastvlm_result_text(result)) != 0) {
    fprintf(stderr, "the tokens spell '%s', the answer is '%s'\n", spelled, fastvlm_result_text(result));
    ok = 0;
  }
  fastvlm_result_free(result);

  /* Without logprobs a result has no entries; more than 20 alternatives is refused with a message. */
  params.logprobs = -1;
  result = fastvlm_session_ask_result(session, "Describe the image.", image, &params, NULL, NULL);
  if (!result || (fastvlm_result_logprobs(result, &entries), entries != 0)) {
    fprintf(stderr, "a result without logprobs asked has %zu entries (%s)\n", entries, fastvlm_last_error());
    ok = 0;
  }
  fastvlm_result_free(result);
  params.logprobs = 21;
  result = fastvlm_session_ask_result(session, "Describe the image.", image, &params, NULL, NULL);
  if (result != NULL || strstr(fastvlm_last_error(), "logprobs") == NULL) {
    fprintf(stderr, "logprobs 21 was not refused: '%s'\n", fastvlm_last_error());
    ok = 0;
  }
  fastvlm_result_free(result);
  return ok;
}

static int collect(const char* piece, size_t length, void* user_data) {
  char* streamed = (char*)user_data;
  size_t used = strlen(streamed);
  if (used + length >= 4096) return 0;
  memcpy(streamed + used, piece, length);
  streamed[used + length] = '\0';
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  if (fastvlm_engine_load("/nonexistent-model", NULL) != NULL || strlen(fastvlm_last_error()) == 0) {
    fprintf(stderr, "a missing model did not fail with a message\n");
    return 1;
  }
  fastvlm_engine* engine = fastvlm_engine_load(argv[1], NULL);
  if (!engine) {
    fprintf(stderr, "load failed: %s\n", fastvlm_last_error());
    return 1;
  }
  fastvlm_session* session = fastvlm_session_new(engine);
  fastvlm_generate_params params = fastvlm_generate_default_params();
  params.max_tokens = 8;
  static char streamed[4096];
  char* answer = fastvlm_session_ask(session, "Describe the image.", argv[2], &params, collect, streamed);
  int ok = answer != NULL && strcmp(answer, streamed) == 0 && strlen(answer) > 0;
  if (!ok) fprintf(stderr, "answer '%s' vs streamed '%s' (%s)\n", answer ? answer : "(null)", streamed, fastvlm_last_error());
  fastvlm_string_free(answer);

  /* Structured output: the answer follows the schema; a schema with an unknown type fails with a message. */
  params.max_tokens = 48;
  params.json_schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"}},\"required\":[\"n\"]}";
  fastvlm_session_reset(session);
  answer = fastvlm_session_ask(session, "Count.", NULL, &params, NULL, NULL);
  if (!answer || strncmp(answer, "{\"n\":", 5) != 0) {
    fprintf(stderr, "schema answer '%s' (%s)\n", answer ? answer : "(null)", fastvlm_last_error());
    ok = 0;
  }
  fastvlm_string_free(answer);
  params.json_schema = "{\"type\":\"tuple\"}";
  answer = fastvlm_session_ask(session, "Count.", NULL, &params, NULL, NULL);
  if (answer != NULL || strstr(fastvlm_last_error(), "type") == NULL) {
    fprintf(stderr, "an unknown schema type was not refused: '%s'\n", fastvlm_last_error());
    ok = 0;
  }
  fastvlm_string_free(answer);
  if (!check_logprobs(session, argv[2])) ok = 0;
  fastvlm_session_free(session);
  fastvlm_engine_free(engine);
  printf("%s\n", ok ? "c api ok" : "c api FAILED");
  return ok ? 0 : 1;
}
