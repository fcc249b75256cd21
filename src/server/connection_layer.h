#pragma once
// The layer between the listening socket and cpp-httplib's request handling. Debian's libcpp-httplib
// (0.11) is a prebuilt library, so its compile-time limits cannot be changed, and as it is it reads a
// request head on a pool thread under the body's read timeout, counts no headers, caps no connections,
// and keeps a connection alive after an error answered before the body was read. So every accepted
// socket is taken over here:
//  - one thread reads the request heads of all connections (poll), within --header-timeout and limits on
//    head size and header count, so a slow, idle or half-open client holds no worker thread;
//  - a complete head goes to a worker, which runs httplib's processing of that one request on it; GET
//    /health and /metrics have workers of their own, so they answer while every API worker is busy;
//    an API request finding every API worker busy gets 503 at once;
//  - at --max-connections a new connection closes the connection that has waited longest for its head,
//    or gets 503 when every connection is in a worker;
//  - after any error response the connection is closed, so a body that was not read is never taken for
//    the next request.
#include <httplib.h>

#include <cstddef>
#include <memory>

namespace fastvlm::server {

struct ConnectionLimits {
  int header_timeout_seconds = 10;  // from a request's first byte to the end of its head
  int idle_seconds = 2;             // a kept-alive connection's wait for its next request
  int io_timeout_seconds = 600;     // each read of a body and each write of a response
  size_t max_header_bytes = 32 << 10;
  int max_headers = 64;
  size_t max_body_bytes = 32 << 20;  // a larger Content-Length gets 413 before the body is read
  int max_connections = 128;
  int api_workers = 8;               // requests to every route but the probes being handled at once
  int probe_workers = 2;             // GET /health and /metrics being handled at once
};

class GuardedServer : public httplib::Server {
 public:
  explicit GuardedServer(ConnectionLimits limits);
  ~GuardedServer() override;

  // Once listen_after_bind() returned: closes the connections still waiting and joins the workers
  // (each finishes the request it handles).
  void shut_down();

  // On the thread handling a request: whether its client has closed the connection (it left).
  static bool client_gone();

 private:
  // httplib's accept loop calls this for each new connection, on the accept thread (see the task queue
  // set in the constructor): the connection is handed to the head reader and the call returns at once.
  bool process_and_close_socket(socket_t sock) override;

  struct Layer;
  std::unique_ptr<Layer> layer_;
};

}  // namespace fastvlm::server
