#pragma once
// `fastvlm serve`: an OpenAI-compatible HTTP API over one loaded Engine.
//   POST /v1/chat/completions  (streaming with Server-Sent Events, or one JSON object)
//   POST /v1/embeddings, /tokenize, /detokenize
//   GET  /v1/models, /props, /health, /metrics
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "fastvlm/fastvlm.hpp"
#include "server/chat_request.h"

namespace fastvlm::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: any free port (bind() tells which)
  std::string api_key;              // empty: no authentication
  int parallel = 1;                 // sequences decoded together (Scheduler slots), one KV cache each
  int kv_budget = 0;                // KV positions of all slots, split evenly; 0: the engine's context per slot
  int prefill_chunk = 64;           // most prompt positions prefilled in one decode step of running streams
  int max_token_gap_ms = 200;       // the longest pause wanted between two tokens of a running stream; 0: none
  int queue = 16;                   // requests that may wait for a slot; beyond that 503
  size_t max_body_bytes = 32 << 20; // larger request bodies get 413
  int timeout_seconds = 600;        // socket read/write timeout, and the longest wait for a slot
  int header_timeout_seconds = 10;  // from a request's first byte to the end of its head
  int request_timeout_seconds = 600;  // from a request's arrival to the end of its generation
  int max_connections = 128;        // open connections; beyond, the longest-idle one or the newcomer goes
  std::optional<ImageDirectory> allowed_image_dir;  // local image paths only under it
  std::string model_id;             // the name /v1/models reports and responses carry
  bool webui = true;                // serve the web UI (server/webui.h) at /
};

class HttpServer {
 public:
  HttpServer(const Engine& engine, ServerOptions options);
  ~HttpServer();

  // Binds the listening socket and returns its port. Throws fastvlm::Error when it cannot.
  int bind();
  // Serves until stop(); returns once every connection has been handled.
  void run();
  // Safe to call from any thread (not from a signal handler).
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fastvlm::server
