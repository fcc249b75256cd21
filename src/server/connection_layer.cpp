#include "server/connection_layer.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "server/api_error.h"

namespace fastvlm::server {
namespace {

using Clock = std::chrono::steady_clock;

// Requests one connection may carry before it is closed, so no client keeps a connection for ever.
constexpr int kMaxRequestsPerConnection = 100;
// How long a connection being closed is read and discarded from, so that closing a socket with unread
// data does not reset the connection before the client has read its last response.
constexpr auto kLinger = std::chrono::seconds(1);

// The socket of the connection the current thread handles, for client_gone().
thread_local int t_client_socket = -1;
// Set by the post-routing handler when the response being sent is an error: the connection ends with it.
thread_local bool t_must_close = false;

// One connection between requests: what was read of it and not yet used, and until when it may wait.
struct Connection {
  int socket = -1;
  std::string received;
  Clock::time_point deadline;
  Clock::time_point since;  // when it began waiting: the oldest waiting one is closed first at the cap
  int served = 0;           // requests answered on it
  bool fresh = false;       // just accepted: counts against --max-connections
  bool draining = false;    // answered for the last time: read until the client closes or kLinger passes
};

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

const char* reason_phrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    default: return "Service Unavailable";
  }
}

// A whole error response in OpenAI's shape, for errors found before httplib sees the request.
std::string error_response(int status, const std::string& code, const std::string& message) {
  const std::string body =
      error_json(message, status >= 500 ? "server_error" : "invalid_request_error", code).dump();
  std::string response = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
                         "\r\nContent-Type: application/json\r\nConnection: close\r\n";
  if (status == 503) response += "Retry-After: 1\r\n";
  return response + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Never waits: the head reader serves every connection, and a client that leaves responses unread could
// have filled its send buffer. What does not fit is dropped; the connection is being closed anyway.
void send_all(int socket, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(socket, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(size_t(n));
  }
}

bool wait_for(int socket, short events, int timeout_ms) {
  pollfd fd{socket, events, 0};
  int ready;
  while ((ready = poll(&fd, 1, timeout_ms)) < 0 && errno == EINTR) {
  }
  return ready > 0;
}

// httplib reads a request through this: first the bytes the head reader already has, then the socket.
class ConnectionStream : public httplib::Stream {
 public:
  ConnectionStream(Connection& connection, int timeout_seconds)
      : connection_(connection), timeout_ms_(timeout_seconds * 1000) {}

  bool is_readable() const override {
    return offset_ < connection_.received.size() || wait_for(connection_.socket, POLLIN, timeout_ms_);
  }
  bool is_writable() const override { return wait_for(connection_.socket, POLLOUT, timeout_ms_); }

  ssize_t read(char* ptr, size_t size) override {
    std::string& buffer = connection_.received;
    if (offset_ == buffer.size()) {
      // httplib reads a head one byte at a time: fill a buffer rather than make a call per byte.
      buffer.clear();
      offset_ = 0;
      if (!wait_for(connection_.socket, POLLIN, timeout_ms_)) return -1;
      char chunk[16 << 10];
      ssize_t n;
      while ((n = recv(connection_.socket, chunk, sizeof chunk, 0)) < 0 && errno == EINTR) {
      }
      if (n <= 0) return n;
      buffer.assign(chunk, size_t(n));
    }
    const size_t n = std::min(size, buffer.size() - offset_);
    std::copy_n(buffer.data() + offset_, n, ptr);
    offset_ += n;
    return ssize_t(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    size_t sent = 0;
    while (sent < size) {
      if (!is_writable()) return -1;
      const ssize_t n = ::send(connection_.socket, ptr + sent, size - sent, MSG_NOSIGNAL);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) return -1;
      sent += size_t(n);
    }
    return ssize_t(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(getsockname, ip, port); }
  socket_t socket() const override { return connection_.socket; }

  // Drops what httplib has read, keeping what a pipelining client sent after it for the next request.
  void keep_unread() { connection_.received.erase(0, offset_); }

 private:
  template <typename Query>
  void address(Query query, std::string& ip, int& port) const {
    sockaddr_storage storage{};
    socklen_t length = sizeof storage;
    char host[NI_MAXHOST] = "";
    char service[NI_MAXSERV] = "";
    if (query(connection_.socket, reinterpret_cast<sockaddr*>(&storage), &length) == 0 &&
        getnameinfo(reinterpret_cast<sockaddr*>(&storage), length, host, sizeof host, service, sizeof service,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(service);
    }
  }

  Connection& connection_;
  const int timeout_ms_;
  size_t offset_ = 0;
};

// A fixed set of threads that take a connection only when one of them is free, so nothing queues
// behind a busy worker: the head reader answers 503 instead.
class Workers {
 public:
  Workers(int count, std::function<void(Connection)> serve) : serve_(std::move(serve)) {
    for (int i = 0; i < count; ++i) threads_.emplace_back([this] { work(); });
  }
  ~Workers() { stop(); }

  bool try_take(Connection& connection) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_ || jobs_.size() >= size_t(idle_)) return false;
      jobs_.push_back(std::move(connection));
    }
    connection.socket = -1;
    changed_.notify_one();
    return true;
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    for (std::thread& thread : threads_)
      if (thread.joinable()) thread.join();
  }

 private:
  void work() {
    std::unique_lock lock(mutex_);
    for (;;) {
      ++idle_;
      changed_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) return;
      Connection connection = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      serve_(std::move(connection));
      lock.lock();
    }
  }

  std::function<void(Connection)> serve_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Connection> jobs_;
  int idle_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// A request head checked before any handler sees it.
struct HeadCheck {
  int status = 0;  // 0: fine
  std::string code, message;
  bool probe = false;  // GET /health or /metrics
};

HeadCheck check_head(std::string_view head, const ConnectionLimits& limits) {
  HeadCheck check;
  const size_t line_end = head.find("\r\n");
  const std::string_view request_line = head.substr(0, line_end);
  const size_t space = request_line.find(' ');
  const std::string_view method = request_line.substr(0, space);
  std::string_view target = space == std::string_view::npos ? std::string_view() : request_line.substr(space + 1);
  target = target.substr(0, target.find(' '));
  const std::string_view path = target.substr(0, target.find('?'));
  check.probe = method == "GET" && (path == "/health" || path == "/metrics");

  int headers = 0;
  bool has_length = false, has_transfer_encoding = false;
  for (size_t at = line_end + 2; at < head.size();) {
    const size_t end = head.find("\r\n", at);
    const std::string_view line = head.substr(at, end - at);
    at = end + 2;
    if (line.empty()) break;
    if (++headers > limits.max_headers) {
      check = {431, "too_many_headers",
               "the request has more than " + std::to_string(limits.max_headers) + " headers"};
      return check;
    }
    const size_t colon = line.find(':');
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = colon == std::string_view::npos ? std::string_view() : trim(line.substr(colon + 1));
    if (iequals(name, "Transfer-Encoding")) has_transfer_encoding = true;
    if (!iequals(name, "Content-Length")) continue;
    has_length = true;
    size_t length = 0;
    const auto [parsed_end, error] = std::from_chars(value.data(), value.data() + value.size(), length);
    if (error != std::errc() || parsed_end != value.data() + value.size()) {
      check = {400, "invalid_content_length", "the Content-Length header is not a number"};
      return check;
    }
    if (length > limits.max_body_bytes) {
      check = {413, "request_too_large",
               "the request body is larger than the server's limit of " + std::to_string(limits.max_body_bytes) +
                   " bytes"};
      return check;
    }
  }
  // With both, a proxy and this server could disagree on where the body ends (request smuggling).
  if (has_length && has_transfer_encoding)
    check = {400, "invalid_framing", "the request has both Content-Length and Transfer-Encoding headers"};
  return check;
}

}  // namespace

struct GuardedServer::Layer {
  Layer(GuardedServer& server, ConnectionLimits limits)
      : server(server),
        limits(limits),
        api(limits.api_workers, [this](Connection c) { serve(std::move(c)); }),
        probes(limits.probe_workers, [this](Connection c) { serve(std::move(c)); }) {
    if (pipe(wake) != 0) throw std::runtime_error("cannot create the connection layer's pipe");
    reader = std::thread([this] { read_heads(); });
  }
  ~Layer() { shut_down(); }

  void adopt(Connection connection) {
    {
      std::lock_guard lock(mutex);
      if (!stopping) {
        inbox.push_back(std::move(connection));
        connection.socket = -1;
      }
    }
    if (connection.socket >= 0) close_now(connection);
    const char byte = 0;
    if (::write(wake[1], &byte, 1) < 0) {
      // The pipe is full, so the reader is due to wake anyway.
    }
  }

  void close_now(Connection& connection) {
    if (connection.socket < 0) return;
    ::close(connection.socket);
    connection.socket = -1;
    --open;
  }

  void shut_down();
  void read_heads();
  void make_room(Connection& newcomer);
  void on_readable(Connection& connection, Clock::time_point now);
  void dispatch(Connection& connection, size_t head_end);
  void answer_and_close(Connection& connection, int status, const std::string& code, const std::string& message);
  void serve(Connection connection);

  GuardedServer& server;
  const ConnectionLimits limits;
  std::atomic<int> open{0};
  Workers api, probes;
  int wake[2] = {-1, -1};
  std::mutex mutex;
  std::vector<Connection> inbox;  // new and kept-alive connections, for the head reader
  bool stopping = false;
  std::list<Connection> waiting;  // the head reader's own
  std::thread reader;
};

void GuardedServer::Layer::shut_down() {
  {
    std::lock_guard lock(mutex);
    if (stopping) return;
    stopping = true;
  }
  const char byte = 0;
  if (::write(wake[1], &byte, 1) < 0) {
    // Full: the reader wakes anyway.
  }
  if (reader.joinable()) reader.join();
  api.stop();
  probes.stop();
  std::lock_guard lock(mutex);
  for (Connection& connection : inbox) close_now(connection);
  inbox.clear();
  ::close(wake[0]);
  ::close(wake[1]);
}

void GuardedServer::Layer::answer_and_close(Connection& connection, int status, const std::string& code,
                                            const std::string& message) {
  send_all(connection.socket, error_response(status, code, message));
  ::shutdown(connection.socket, SHUT_WR);
  connection.draining = true;
  connection.deadline = Clock::now() + kLinger;
}

void GuardedServer::Layer::dispatch(Connection& connection, size_t head_end) {
  const HeadCheck check = check_head(std::string_view(connection.received).substr(0, head_end), limits);
  if (check.status) return answer_and_close(connection, check.status, check.code, check.message);
  if (!(check.probe ? probes : api).try_take(connection))
    return answer_and_close(connection, 503, "server_busy",
                            "every connection worker is busy; retry later");
}

void GuardedServer::Layer::on_readable(Connection& connection, Clock::time_point now) {
  char chunk[16 << 10];
  ssize_t n;
  while ((n = recv(connection.socket, chunk, sizeof chunk, MSG_DONTWAIT)) < 0 && errno == EINTR) {
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (n <= 0) return close_now(connection);
  if (connection.draining) return;  // discarded
  // Between requests the idle timeout ran; from the next request's first byte the head timeout runs.
  if (connection.received.empty() && connection.served > 0) connection.deadline = now + std::chrono::seconds(limits.header_timeout_seconds);
  connection.received.append(chunk, size_t(n));
  const size_t head_end = connection.received.find("\r\n\r\n");
  if (head_end == std::string::npos ? connection.received.size() > limits.max_header_bytes
                                    : head_end + 4 > limits.max_header_bytes)
    return answer_and_close(connection, 431, "headers_too_large",
                            "the request head is larger than " + std::to_string(limits.max_header_bytes) + " bytes");
  if (head_end != std::string::npos) dispatch(connection, head_end + 4);
}

void GuardedServer::Layer::make_room(Connection& newcomer) {
  if (open <= limits.max_connections) return;
  // The connection that has waited longest for a request head (idle or half-open) makes room: a client
  // cannot lock others out by holding connections open. When every connection is in a worker, the
  // newcomer is turned away.
  auto oldest = waiting.end();
  for (auto it = waiting.begin(); it != waiting.end(); ++it)
    if (!it->draining && it->socket >= 0 && (oldest == waiting.end() || it->since < oldest->since)) oldest = it;
  if (oldest != waiting.end()) return close_now(*oldest);
  answer_and_close(newcomer, 503, "too_many_connections",
                   "the server has " + std::to_string(limits.max_connections) + " connections open; retry later");
}

void GuardedServer::Layer::read_heads() {
  std::vector<pollfd> fds;
  for (;;) {
    {
      std::lock_guard lock(mutex);
      if (stopping) break;
      for (Connection& connection : inbox) {
        if (std::exchange(connection.fresh, false)) make_room(connection);
        waiting.push_back(std::move(connection));
      }
      inbox.clear();
    }

    const auto now = Clock::now();
    for (Connection& connection : waiting) {
      if (connection.socket < 0 || now < connection.deadline) continue;
      if (!connection.draining && !connection.received.empty())
        answer_and_close(connection, 408, "header_timeout",
                         "the request head did not arrive within " + std::to_string(limits.header_timeout_seconds) +
                             " s");
      else
        close_now(connection);
    }
    waiting.remove_if([](const Connection& c) { return c.socket < 0; });

    fds.assign(1, pollfd{wake[0], POLLIN, 0});
    auto next_deadline = now + std::chrono::seconds(limits.header_timeout_seconds);
    for (const Connection& connection : waiting) {
      fds.push_back({connection.socket, POLLIN, 0});
      next_deadline = std::min(next_deadline, connection.deadline);
    }
    const auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(next_deadline - now).count() + 1;
    if (poll(fds.data(), fds.size(), int(std::max<long long>(wait_ms, 1))) < 0 && errno != EINTR) break;
    if (fds[0].revents) {
      char drain[256];
      while (::read(wake[0], drain, sizeof drain) == sizeof drain) {
      }
    }
    const auto woke = Clock::now();
    size_t index = 1;
    for (auto it = waiting.begin(); it != waiting.end(); ++index) {
      if (fds[index].revents) on_readable(*it, woke);
      // Connections handed to a worker (socket moved out) or closed leave the list.
      it = it->socket < 0 ? waiting.erase(it) : std::next(it);
    }
  }
  for (Connection& connection : waiting) close_now(connection);
  waiting.clear();
}

void GuardedServer::Layer::serve(Connection connection) {
  t_client_socket = connection.socket;
  bool keep = false;
  {
    ConnectionStream stream(connection, limits.io_timeout_seconds);
    bool connection_closed = false;
    const bool last = ++connection.served >= kMaxRequestsPerConnection;
    t_must_close = false;
    keep = server.process_request(stream, last, connection_closed, nullptr) && !connection_closed && !last &&
           !t_must_close;
    stream.keep_unread();
  }
  t_client_socket = -1;
  const auto now = Clock::now();
  connection.since = now;
  if (!keep) {
    // Read what the client still sends until it closes, so the close does not discard our response.
    ::shutdown(connection.socket, SHUT_WR);
    connection.draining = true;
    connection.deadline = now + kLinger;
  } else {
    connection.deadline = now + std::chrono::seconds(connection.received.empty() ? limits.idle_seconds
                                                                                 : limits.header_timeout_seconds);
  }
  const size_t head_end = connection.received.find("\r\n\r\n");
  if (keep && head_end != std::string::npos) {
    // A pipelined request is already here: hand it straight on.
    dispatch(connection, head_end + 4);
    if (connection.socket < 0) return;
  }
  adopt(std::move(connection));
}

GuardedServer::GuardedServer(ConnectionLimits limits) {
  set_read_timeout(limits.io_timeout_seconds);
  set_write_timeout(limits.io_timeout_seconds);
  set_payload_max_length(limits.max_body_bytes);
  // Only for the Keep-Alive header httplib writes: this layer enforces both.
  set_keep_alive_timeout(limits.idle_seconds);
  set_keep_alive_max_count(kMaxRequestsPerConnection);
  // httplib's accept loop runs each connection's task on the accept thread, which only hands the socket
  // over: from then on this layer's threads serve it.
  struct Inline : httplib::TaskQueue {
    void enqueue(std::function<void()> fn) override { fn(); }
    void shutdown() override {}
  };
  new_task_queue = [] { return new Inline; };
  // Every error response closes its connection: a body the handler did not read (a 401 or 413 sent
  // before it) would otherwise be read as the next request.
  set_post_routing_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status < 400) return;
    res.set_header("Connection", "close");
    res.headers.erase("Keep-Alive");
    t_must_close = true;
  });
  layer_ = std::make_unique<Layer>(*this, limits);
}

GuardedServer::~GuardedServer() = default;

void GuardedServer::shut_down() { layer_->shut_down(); }

bool GuardedServer::client_gone() {
  if (t_client_socket < 0) return false;
  pollfd fd{t_client_socket, POLLRDHUP, 0};
  return poll(&fd, 1, 0) > 0 && (fd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

bool GuardedServer::process_and_close_socket(socket_t sock) {
  Connection connection;
  connection.socket = sock;
  connection.since = Clock::now();
  connection.fresh = true;
  connection.deadline = connection.since + std::chrono::seconds(layer_->limits.header_timeout_seconds);
  ++layer_->open;
  layer_->adopt(std::move(connection));
  return true;
}

}  // namespace fastvlm::server
