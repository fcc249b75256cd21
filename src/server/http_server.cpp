#include "server/http_server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <semaphore>
#include <thread>

#include "core/error.h"
#include "fastvlm/scheduler.hpp"
#include "server/api_error.h"
#include "server/base64.h"
#include "server/chat_request.h"
#include "server/connection_layer.h"
#include "server/metrics.h"
#include "server/openai_format.h"
#include "server/token_stream.h"
#include "server/webui.h"

namespace fastvlm::server {
namespace {

using nlohmann::json;

// API workers beyond the slots and the queue: /v1/models stays answerable, and requests over the queue
// limit still reach the handler to be told 503 rather than wait unseen.
constexpr int kSpareConnectionThreads = 8;
constexpr int kRetryAfterSeconds = 1;

void send_error(httplib::Response& res, int status, const std::string& type, const std::string& code,
                const std::string& message) {
  res.status = status;
  if (status == 503) res.set_header("Retry-After", std::to_string(kRetryAfterSeconds));
  res.set_content(dump(error_json(message, type, code)), "application/json");
}

// Maps whatever a request's handling threw to OpenAI's error object and the matching status.
void send_exception(httplib::Response& res, const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const ApiError& e) {
    send_error(res, e.status(), e.type(), e.code(), e.what());
  } catch (const SchedulerBusy& e) {
    // The queue is full, the request waited too long for a slot, or the server is shutting down.
    send_error(res, 503, "server_error", "server_busy", e.what());
  } catch (const fastvlm::Error& e) {
    // The engine's own checks: an image that does not decode or is too large, a prompt over the context.
    send_error(res, 400, "invalid_request_error", "invalid_request", e.what());
  } catch (const std::exception& e) {
    send_error(res, 500, "server_error", "internal_error", std::string("internal error: ") + e.what());
  } catch (...) {
    send_error(res, 500, "server_error", "internal_error", "internal error");
  }
}

// Compares every byte whatever the first difference, so response times do not reveal the key.
bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i) difference |= uint8_t(a[i]) ^ uint8_t(b[i]);
  return difference == 0;
}

bool send_event(httplib::DataSink& sink, const std::string& data) {
  const std::string event = "data: " + data + "\n\n";
  return sink.write(event.data(), event.size());
}

using Clock = std::chrono::steady_clock;

ConnectionLimits connection_limits(const ServerOptions& o) {
  ConnectionLimits limits;
  limits.header_timeout_seconds = o.header_timeout_seconds;
  limits.io_timeout_seconds = o.timeout_seconds;
  limits.max_body_bytes = o.max_body_bytes;
  limits.max_connections = o.max_connections;
  // Every request that may hold a slot or wait for one, and spares to turn the rest away with a 503.
  limits.api_workers = o.parallel + o.queue + kSpareConnectionThreads;
  return limits;
}

// A generation cut off by --request-timeout ends like one that reached max_tokens (finish_reason
// "length"); the KV cache is treated as after a cancellation, since the answer is incomplete.
void report_timeout(Generation& answer) { answer.stop_reason = StopReason::MaxTokens; }

// One response's choices in the scheduler: what they stream, and how to stop them.
struct Response {
  explicit Response(int choices) : stream(choices), timed_out(size_t(choices), false) {}
  TokenStream stream;
  std::vector<uint64_t> ids;   // the choices' scheduler requests
  std::vector<char> timed_out;  // per choice, written on the scheduler's thread before the choice ends
};

SchedulerOptions scheduler_options(const ServerOptions& o) {
  SchedulerOptions options;
  options.slots = o.parallel;
  options.kv_budget = o.kv_budget;
  options.prefill_chunk = o.prefill_chunk;
  options.max_token_gap = std::chrono::milliseconds(o.max_token_gap_ms);
  options.queue = o.queue;
  options.max_queue_wait = std::chrono::seconds(o.timeout_seconds);
  return options;
}

}  // namespace

struct HttpServer::Impl {
  Impl(const Engine& engine, ServerOptions options)
      : engine(engine),
        options(std::move(options)),
        scheduler(engine, scheduler_options(this->options)),
        embedding_slots(std::max(this->options.parallel, 1)),
        http(connection_limits(this->options)) {
    policy.allowed_image_dir = this->options.allowed_image_dir;
    // Without a limit in the request, generate until the slot's context is full (OpenAI's behaviour).
    policy.default_max_tokens = scheduler.stats().slot_capacity;
    policy.vocab_size = engine.token_count();
  }

  void install_routes();
  bool authorized(const httplib::Request& req) const;
  void chat_completions(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader);
  void embeddings(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader);
  TokenSpeller speller() const {
    return [this](int32_t id) { return engine.token_bytes(id); };
  }
  std::string read_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) const;
  // Submits the request's n choices (a sampled choice i with the seed seed + i). Throws before any work
  // for a bad request, SchedulerBusy (503) when they do not all find room in the queue.
  std::shared_ptr<Response> submit(const ChatRequest& request, Clock::time_point deadline);
  void cancel(Response& response);
  void stream_completion(httplib::Response& res, const ChatRequest& request, std::shared_ptr<Response> response);

  const Engine& engine;
  const ServerOptions options;
  RequestPolicy policy;
  Metrics metrics;
  std::atomic<bool> stopping{false};
  // After what its callbacks use, before the routes that use it: destroyed after the HTTP server.
  Scheduler scheduler;
  std::counting_semaphore<> embedding_slots;  // embeddings computed at once, beside the scheduler
  GuardedServer http;
};

bool HttpServer::Impl::authorized(const httplib::Request& req) const {
  if (options.api_key.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  constexpr std::string_view scheme = "Bearer ";
  if (header.compare(0, scheme.size(), scheme) != 0) return false;
  return constant_time_equal(std::string_view(header).substr(scheme.size()), options.api_key);
}

std::string HttpServer::Impl::read_body(const httplib::Request& req, httplib::Response& res,
                                        const httplib::ContentReader& reader) const {
  // Without either header HTTP/1.1 says there is no body, but httplib would read until the client
  // closes the connection.
  if (!req.has_header("Content-Length") &&
      req.get_header_value("Transfer-Encoding").find("chunked") == std::string::npos)
    throw invalid_request("invalid_body", "the request has no body: send the JSON with a Content-Length");
  std::string body;
  bool too_large = false;
  // httplib refuses a declared Content-Length over the limit itself (status 413); a chunked body is
  // counted here as it arrives.
  const bool complete = reader([&](const char* data, size_t size) {
    if (body.size() + size > options.max_body_bytes) {
      too_large = true;
      return false;
    }
    body.append(data, size);
    return true;
  });
  if (too_large || res.status == 413)
    throw ApiError(413, "invalid_request_error", "request_too_large",
                   "request body is larger than the server's limit of " + std::to_string(options.max_body_bytes) +
                       " bytes");
  if (!complete) throw invalid_request("invalid_body", "the request body could not be read");
  return body;
}

std::shared_ptr<Response> HttpServer::Impl::submit(const ChatRequest& request, Clock::time_point deadline) {
  auto response = std::make_shared<Response>(request.n);
  try {
    for (int choice = 0; choice < request.n; ++choice) {
      ScheduledRequest scheduled{request.conversation, "", std::nullopt, request.generate};
      scheduled.options.sampling.seed += uint64_t(choice);
      // The callbacks hold the response: it outlives the handler when the client left.
      response->ids.push_back(scheduler.submit(
          std::move(scheduled),
          [this, response, choice, deadline](std::string_view piece) {
            response->timed_out[size_t(choice)] = Clock::now() >= deadline;
            return !stopping && !response->timed_out[size_t(choice)] && response->stream.push(choice, piece);
          },
          [response, choice](Generation answer, std::exception_ptr error) {
            if (error) return response->stream.fail(choice, error);
            if (response->timed_out[size_t(choice)]) report_timeout(answer);
            response->stream.finish(choice, std::move(answer));
          }));
    }
  } catch (...) {
    cancel(*response);
    throw;
  }
  return response;
}

void HttpServer::Impl::cancel(Response& response) {
  response.stream.cancel();
  for (uint64_t id : response.ids) scheduler.cancel(id);
}

void HttpServer::Impl::chat_completions(const httplib::Request& req, httplib::Response& res,
                                        const httplib::ContentReader& reader) {
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(options.request_timeout_seconds);
  try {
    const ChatRequest request = parse_chat_request(read_body(req, res, reader), policy);
    std::shared_ptr<Response> response = submit(request, deadline);
    if (request.stream) return stream_completion(res, request, std::move(response));
    // Nobody reads the answer of a client that left: its choices are cancelled as soon as that shows.
    bool client_gone = false;
    while (!response->stream.wait_until_ended(std::chrono::milliseconds(50)))
      if (!client_gone && GuardedServer::client_gone()) {
        client_gone = true;
        cancel(*response);
      }
    if (response->stream.failed()) std::rethrow_exception(response->stream.error());
    if (client_gone) {
      metrics.count_cancelled();
      return send_error(res, 499, "invalid_request_error", "client_closed_request",
                        "the client closed the connection before the answer was complete");
    }
    std::vector<Generation> answers;
    std::vector<json> logprobs;
    for (int choice = 0; choice < request.n; ++choice) {
      answers.push_back(response->stream.generation(choice));
      metrics.count_generation(answers.back());
      logprobs.push_back(logprobs_json(answers.back(), request.generate.logprobs >= 0, speller()));
    }
    res.set_content(dump(completion_json(new_completion_id(options.model_id), answers, logprobs)), "application/json");
  } catch (...) {
    send_exception(res, std::current_exception());
  }
}

void HttpServer::Impl::stream_completion(httplib::Response& res, const ChatRequest& request,
                                         std::shared_ptr<Response> response) {
  // The status line goes out with the first byte of the stream: wait until a choice has either produced
  // text or failed, so a bad image is still a plain 4xx response.
  response->stream.wait_for_output();
  if (response->stream.failed()) {
    cancel(*response);
    return send_exception(res, response->stream.error());
  }

  const CompletionId id = new_completion_id(options.model_id);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, response, id, include_usage = request.include_usage, logprobs = request.generate.logprobs >= 0](
          size_t, httplib::DataSink& sink) {
        TokenStream& stream = response->stream;
        auto send_chunk = [&](json chunk) {
          if (include_usage) chunk["usage"] = nullptr;  // as OpenAI: every chunk but the last has usage null
          return send_event(sink, dump(chunk));
        };
        bool connected = true;
        for (int choice = 0; connected && choice < stream.choices(); ++choice)
          connected = send_chunk(chunk_json(id, choice, {{"role", "assistant"}, {"content", ""}}, nullptr));
        while (connected) {
          std::optional<TokenStream::Piece> piece = stream.next();
          if (!piece) break;
          connected = send_chunk(chunk_json(id, piece->choice, {{"content", piece->text}}, nullptr));
        }
        if (!connected) {
          // The client went away: its choices end at the next step and free their slots.
          cancel(*response);
          metrics.count_cancelled();
          return false;
        }
        if (stream.failed()) {
          // Too late for a status code: report the failure in the stream, as OpenAI does.
          httplib::Response error_response;
          send_exception(error_response, stream.error());
          send_event(sink, error_response.body);
        } else {
          std::vector<Generation> answers;
          for (int choice = 0; choice < stream.choices(); ++choice) {
            const Generation& answer = stream.generation(choice);
            metrics.count_generation(answer);
            // Log-probabilities come whole with the last chunk: the stream carries text, not tokens.
            send_chunk(chunk_json(id, choice, json::object(), finish_reason(answer.stop_reason),
                                  logprobs_json(answer, logprobs, speller())));
            answers.push_back(answer);
          }
          if (include_usage) send_event(sink, dump(usage_chunk_json(id, answers)));
        }
        send_event(sink, "[DONE]");
        sink.done();
        return true;
      },
      // Runs when the response is over, however it ended: stops the choices if they still run.
      [this, response](bool) { cancel(*response); });
}

void HttpServer::Impl::embeddings(const httplib::Request& req, httplib::Response& res,
                                  const httplib::ContentReader& reader) {
  try {
    const EmbeddingsRequest request = parse_embeddings_request(read_body(req, res, reader), policy);
    // As many at once as there are slots; beyond, wait (up to --timeout) for one to finish.
    if (!embedding_slots.try_acquire_for(std::chrono::seconds(options.timeout_seconds)))
      throw ApiError(503, "server_error", "server_busy", "every embedding slot stayed busy; retry later");
    struct Release {
      std::counting_semaphore<>& slots;
      ~Release() { slots.release(); }
    } release{embedding_slots};
    const size_t hidden = size_t(engine.info().hidden_size);
    auto encode = [&](std::span<const float> values) -> json {
      if (!request.base64) return values;
      return encode_base64(std::span(reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(float)));
    };
    json data = json::array();
    int total_tokens = 0;
    for (size_t i = 0; i < request.inputs.size(); ++i) {
      const EmbeddingsRequest::Input& input = request.inputs[i];
      int tokens = 0;
      const std::vector<float> rows =
          input.image ? engine.embed_image(*input.image) : engine.embed_text(input.text, &tokens);
      if (input.image) tokens = int(rows.size() / hidden);
      total_tokens += tokens;
      json embedding;
      if (request.every_token) {
        embedding = json::array();
        for (int t = 0; t < tokens; ++t) embedding.push_back(encode(std::span(rows).subspan(size_t(t) * hidden, hidden)));
      } else {
        std::vector<float> mean(hidden, 0.0f);
        for (int t = 0; t < tokens; ++t)
          for (size_t d = 0; d < hidden; ++d) mean[d] += rows[size_t(t) * hidden + d];
        for (float& value : mean) value /= float(tokens);
        embedding = encode(mean);
      }
      data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", std::move(embedding)}});
    }
    res.set_content(dump({{"object", "list"},
                          {"data", std::move(data)},
                          {"model", options.model_id},
                          {"usage", {{"prompt_tokens", total_tokens}, {"total_tokens", total_tokens}}}}),
                    "application/json");
  } catch (...) {
    send_exception(res, std::current_exception());
  }
}

void HttpServer::Impl::install_routes() {
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // /health and /metrics stay open for load balancers and scrapers; the API needs the key.
    const bool api = req.path.rfind("/v1/", 0) == 0 || req.path == "/tokenize" || req.path == "/detokenize" ||
                     req.path == "/props";
    if (!api || authorized(req)) return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, 401, "invalid_request_error", "invalid_api_key",
               req.has_header("Authorization") ? "incorrect API key provided"
                                               : "missing API key: send the header 'Authorization: Bearer <key>'");
    return httplib::Server::HandlerResponse::Handled;
  });

  http.Post("/v1/chat/completions",
            [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
              chat_completions(req, res, reader);
            });

  http.Post("/v1/embeddings",
            [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
              embeddings(req, res, reader);
            });

  // llama-server's tokenizer endpoints: ids of a text (with each token's text on request) and back.
  http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    try {
      const TokenizeRequest request = parse_tokenize_request(read_body(req, res, reader));
      json tokens = json::array();
      for (int32_t id : engine.tokenize(request.content)) {
        if (!request.with_pieces) {
          tokens.push_back(id);
          continue;
        }
        // A piece that is not valid UTF-8 on its own (part of a character) is given as its bytes.
        const std::string piece = engine.token_bytes(id);
        const json text = json(piece);
        bool valid = true;
        try {
          (void)text.dump();
        } catch (const json::exception&) {
          valid = false;
        }
        tokens.push_back({{"id", id}, {"piece", valid ? text : json(std::vector<uint8_t>(piece.begin(), piece.end()))}});
      }
      res.set_content(dump({{"tokens", std::move(tokens)}}), "application/json");
    } catch (...) {
      send_exception(res, std::current_exception());
    }
  });
  http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
    try {
      const std::vector<int32_t> ids = parse_detokenize_request(read_body(req, res, reader), policy);
      res.set_content(dump({{"content", engine.detokenize(ids)}}), "application/json");
    } catch (...) {
      send_exception(res, std::current_exception());
    }
  });
  http.Get("/props", [this](const httplib::Request&, httplib::Response& res) {
    const ModelInfo& info = engine.info();
    res.set_content(dump({{"model_path", info.path},
                          {"model_alias", options.model_id},
                          {"n_ctx", scheduler.stats().slot_capacity},
                          {"total_slots", scheduler.stats().slots},
                          {"slots_busy", scheduler.stats().active},
                          {"kv_budget", scheduler.stats().slot_capacity * scheduler.stats().slots},
                          {"prefill_chunk", options.prefill_chunk},
                          {"max_token_gap_ms", options.max_token_gap_ms},
                          {"chat_format", info.chat_format},
                          {"modalities", {{"vision", info.image_tokens > 0}, {"audio", false}}},
                          {"default_generation_settings", {{"n_ctx", scheduler.stats().slot_capacity}}}}),
                    "application/json");
  });

  if (options.webui) install_webui(http);

  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const ModelInfo& info = engine.info();
    const int context = scheduler.stats().slot_capacity;
    json model = {{"id", options.model_id},
                  {"object", "model"},
                  {"created", 0},
                  {"owned_by", "fastvlm"},
                  {"context_length", context},
                  {"meta", {{"context", context},
                            {"n_ctx", context},
                            {"n_vocab", engine.token_count()},
                            {"image_size", info.image_size},
                            {"image_tokens", info.image_tokens},
                            {"hidden_size", info.hidden_size},
                            {"layers", info.num_layers}}}};
    res.set_content(dump({{"object", "list"}, {"data", json::array({model})}}), "application/json");
  });

  // The server listens only once the model is loaded, so reaching it means it is ready.
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const SchedulerStats stats = scheduler.stats();
    res.set_content(dump({{"status", "ok"}, {"slots_busy", stats.active}, {"slots", stats.slots}, {"queued", stats.queued}}),
                    "application/json");
  });

  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(scheduler.stats()), "text/plain; version=0.0.4");
  });

  // Responses httplib produced itself (unknown route, body over the limit, unreadable request) get
  // OpenAI's error shape too.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    switch (res.status) {
      case 404:
        send_error(res, 404, "invalid_request_error", "not_found", "no route for " + req.method + " " + req.path);
        break;
      case 413:
        send_error(res, 413, "invalid_request_error", "request_too_large", "request body is larger than the limit");
        break;
      default:
        send_error(res, res.status, res.status < 500 ? "invalid_request_error" : "server_error", "http_error",
                   "HTTP error " + std::to_string(res.status));
    }
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
    send_exception(res, error);
  });
  http.set_logger([this](const httplib::Request&, const httplib::Response& res) { metrics.count_response(res.status); });
}

HttpServer::HttpServer(const Engine& engine, ServerOptions options)
    : impl_(std::make_unique<Impl>(engine, std::move(options))) {
  impl_->install_routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  const ServerOptions& o = impl_->options;
  const int port = o.port == 0 ? impl_->http.bind_to_any_port(o.host)
                               : (impl_->http.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port <= 0) throw Error("cannot listen on " + o.host + ":" + std::to_string(o.port) + " (address in use?)");
  return port;
}

void HttpServer::run() {
  impl_->http.listen_after_bind();
  impl_->http.shut_down();
}

void HttpServer::stop() {
  // Running generations end at their next token and queued requests are turned away, so the
  // connections drain at once instead of after every answer is complete.
  impl_->stopping = true;
  impl_->scheduler.shutdown();
  impl_->http.stop();
}

}  // namespace fastvlm::server
