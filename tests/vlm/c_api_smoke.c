/* The C API from a C program: load the tiny model, ask about an image with a streaming callback, and
 * check that the streamed pieces add up to the returned answer and that errors come back as NULL with a
 * message. Usage: c_api_smoke MODEL_DIR IMAGE */
#include <stdio.h>
#include <string.h>

#include "fastvlm/fastvlm.h"

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
  fastvlm_session_free(session);
  fastvlm_engine_free(engine);
  printf("%s\n", ok ? "c api ok" : "c api FAILED");
  return ok ? 0 : 1;
}
