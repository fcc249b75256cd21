// fastvlm serve: the OpenAI-compatible HTTP server (src/server) over one loaded model.
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "commands.h"
#include "common.h"
#include "core/error.h"
#include "server/http_server.h"

namespace fastvlm::cli {
namespace {

// Blocks SIGINT and SIGTERM in this thread and every thread started after it, so they are only ever
// taken by sigwait() in the thread that stops the server (a signal handler could not call stop() safely).
sigset_t block_shutdown_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

}  // namespace

void add_serve_command(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    server::ServerOptions server;
    std::string allowed_image_dir;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* command = app.add_subcommand("serve", "Serve the OpenAI chat completions API over HTTP");
  flags->model.add_to(*command);
  server::ServerOptions& o = flags->server;
  command->add_option("--host", o.host, "Address to listen on")->capture_default_str();
  command->add_option("--port", o.port, "Port to listen on (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  command->add_option("--api-key", o.api_key, "Require 'Authorization: Bearer KEY' on /v1/ requests");
  command->add_option("--parallel", o.parallel,
                      "Requests in flight, decoded together in one batch per step, one KV cache slot each")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  command->add_option("--kv-budget", o.kv_budget,
                      "KV cache positions of all slots together, split evenly over --parallel (llama-server's -c "
                      "with -np); 0: --ctx positions per slot. A request whose prompt does not fit its slot gets 400")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str();
  command->add_option("--prefill-chunk", o.prefill_chunk,
                      "Most prompt positions prefilled in one decode step of other streams (the chunk rides "
                      "along in their batch)")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  command->add_option("--max-token-gap-ms", o.max_token_gap_ms,
                      "Longest pause wanted between two tokens of a running stream: a prompt chunk riding along "
                      "in its decode step gets the positions that fit in this time, at the cost per position "
                      "measured so far (at least 8, at most --prefill-chunk); 0: always --prefill-chunk")
      ->check(CLI::Range(0, 600000))
      ->capture_default_str();
  command->add_option("--queue", o.queue, "Requests that may wait for a free slot; more get 503")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  command->add_option("--max-body-bytes", o.max_body_bytes, "Largest request body accepted (413 beyond)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--timeout", o.timeout_seconds, "Socket read/write timeout and longest wait for a slot, seconds")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  command->add_option("--header-timeout", o.header_timeout_seconds,
                      "Longest time a request's head (request line and headers) may take to arrive, seconds")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  command->add_option("--request-timeout", o.request_timeout_seconds,
                      "Longest time one request may generate; then it ends with finish_reason 'length', seconds")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  command->add_option("--max-connections", o.max_connections,
                      "Open connections; beyond, the one idle longest is closed, or the newcomer gets 503")
      ->check(CLI::Range(4, 65536))
      ->capture_default_str();
  command->add_flag("--no-webui{false}", o.webui, "Do not serve the web UI at /");
  command->add_option("--allowed-image-dir", flags->allowed_image_dir,
                      "Accept local image paths (file:///...) inside this directory")
      ->check(CLI::ExistingDirectory);

  command->callback([flags] {
    // A client that disconnects mid-response must not kill the server with SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);
    const sigset_t shutdown_signals = block_shutdown_signals();

    server::ServerOptions options = flags->server;
    if (!flags->allowed_image_dir.empty())
      options.allowed_image_dir = server::ImageDirectory::of(flags->allowed_image_dir);
    options.model_id = std::filesystem::path(flags->model.model).lexically_normal().filename().string();
    if (options.model_id.empty())
      options.model_id = std::filesystem::path(flags->model.model).lexically_normal().parent_path().filename().string();

    auto engine = flags->model.load();
    server::HttpServer http(*engine, options);
    const int port = http.bind();

    std::thread signal_waiter([&http, shutdown_signals] {
      int signal_number = 0;
      sigwait(&shutdown_signals, &signal_number);
      http.stop();
    });
    const int slot_context = options.kv_budget > 0 ? options.kv_budget / options.parallel : engine->options().context;
    std::printf("fastvlm serve: listening on http://%s:%d (model %s, %d slots of %d positions)\n", options.host.c_str(),
                port, options.model_id.c_str(), options.parallel, slot_context);
    std::fflush(stdout);
    http.run();
    // Wakes the waiter if the server stopped by itself; after a signal it has finished already.
    pthread_kill(signal_waiter.native_handle(), SIGTERM);
    signal_waiter.join();
    std::printf("fastvlm serve: stopped\n");
  });
}

}  // namespace fastvlm::cli
