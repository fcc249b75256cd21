// Starts the real `fastvlm serve` on a loopback port with the tiny fixture and talks to it with curl and
// httplib: the OpenAI chat API (plain and streamed), the other endpoints, every error status, a client
// disconnecting mid-stream, a full queue, and a bounded load test. Greedy answers must equal those of
// `fastvlm run --temp 0` for the same image and prompt.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "run_command.h"

extern char** environ;

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

const std::string kBinary = FASTVLM_BIN_DIR "/fastvlm";
const std::string kModel = FASTVLM_SHARED_DIR "/fixtures/tiny-fastvlm";
const std::string kImageDir = FASTVLM_SHARED_DIR "/fixtures/tiny-fastvlm/golden";
const std::string kSmallImage = kImageDir + "/image_b_97x131.jpg";  // 12707 pixels
const std::string kLargeImage = kImageDir + "/image_a_320x200.png";  // 64000 pixels: over the limit below
const std::string kApiKey = "test-key-123";
const std::string kPrompt = "Describe the image.";
constexpr int kAnswerTokens = 12;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  return {std::istreambuf_iterator<char>(in), {}};
}

// Written out here so the test does not depend on the server's own base64 code.
std::string encode_base64(const std::string& bytes) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t group = 0;
    for (size_t k = 0; k < 3; ++k) group = (group << 8) | (k < n ? uint8_t(bytes[i + k]) : 0u);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? alphabet[(group >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

std::string data_url(const std::string& path, const std::string& media_type) {
  return "data:" + media_type + ";base64," + encode_base64(read_file(path));
}

json image_request(const std::string& url, const std::string& text, int max_tokens, bool stream = false) {
  json content = json::array({{{"type", "text"}, {"text", text}}, {{"type", "image_url"}, {"image_url", {{"url", url}}}}});
  return {{"model", "tiny-fastvlm"},
          {"messages", json::array({{{"role", "user"}, {"content", content}}})},
          {"max_tokens", max_tokens},
          {"temperature", 0},
          {"stream", stream}};
}

json text_request(const std::string& text, int max_tokens) {
  return {{"messages", json::array({{{"role", "user"}, {"content", text}}})}, {"max_tokens", max_tokens}, {"temperature", 0}};
}

using fastvlm::test_support::run_command;
using fastvlm::test_support::shell_quote;

// The CLI's greedy answer, the reference every server answer is compared with.
std::string cli_answer(const std::string* image, const std::string& prompt, int max_tokens) {
  std::string command = shell_quote(kBinary) + " run -m " + shell_quote(kModel) + " --dtype f32 --threads 1 -n " +
                        std::to_string(max_tokens) + " --temp 0 --json -p " + shell_quote(prompt);
  if (image) command += " --image " + shell_quote(*image);
  const auto [out, status] = run_command(command);
  EXPECT_EQ(status, 0) << command;
  return json::parse(out).at("text").get<std::string>();
}

// One `fastvlm serve` process on a free loopback port, stopped with SIGTERM when destroyed.
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> extra_args) {
    std::vector<std::string> args = {kBinary, "serve", "-m", kModel, "--port", "0", "--threads", "1", "--dtype", "f32"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    EXPECT_EQ(posix_spawn(&pid_, kBinary.c_str(), &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    stdout_ = out[0];
    port_ = wait_for_listening_line();
  }
  ~ServerProcess() { stop(); }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // SIGTERM, then the exit status (0 for a clean shutdown); SIGKILL if it does not exit in 10 s.
  int stop() {
    if (pid_ <= 0) return exit_status_;
    kill(pid_, SIGTERM);
    int status = 0;
    for (auto deadline = Clock::now() + std::chrono::seconds(10); Clock::now() < deadline;) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        pid_ = -1;
        close(stdout_);
        return exit_status_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    pid_ = -1;
    close(stdout_);
    return exit_status_ = 137;
  }

 private:
  int wait_for_listening_line() {
    std::string seen;
    const std::regex listening(R"(listening on http://127\.0\.0\.1:(\d+))");
    for (auto deadline = Clock::now() + std::chrono::seconds(60); Clock::now() < deadline;) {
      pollfd fd{stdout_, POLLIN, 0};
      if (poll(&fd, 1, 200) <= 0) continue;
      char buffer[512];
      ssize_t n = read(stdout_, buffer, sizeof buffer);
      if (n <= 0) break;
      seen.append(buffer, size_t(n));
      std::smatch match;
      if (std::regex_search(seen, match, listening)) return std::stoi(match[1]);
    }
    ADD_FAILURE() << "the server did not report listening; stdout: " << seen;
    return -1;
  }

  pid_t pid_ = -1;
  int stdout_ = -1;
  int port_ = -1;
  int exit_status_ = -1;
};

struct CurlResult {
  int status = 0;
  std::string body;
  std::string headers;
};

// curl against the server. The request body goes through a file, as large bodies would not fit a command line.
CurlResult curl(const ServerProcess& server, const std::string& method, const std::string& path,
                const std::optional<std::string>& body = std::nullopt, const std::string& api_key = kApiKey,
                const std::vector<std::string>& extra = {}) {
  static std::atomic<int> counter{0};
  const std::string stem = ::testing::TempDir() + "fastvlm_server_" + std::to_string(getpid()) + "_" +
                           std::to_string(counter++);
  std::string command = "curl -sS --max-time 60 -X " + method + " -D " + shell_quote(stem + ".headers") + " -o " +
                        shell_quote(stem + ".body") + " -w '%{http_code}'";
  if (!api_key.empty()) command += " -H " + shell_quote("Authorization: Bearer " + api_key);
  if (body) {
    std::ofstream(stem + ".request", std::ios::binary) << *body;
    command += " -H 'Content-Type: application/json' --data-binary @" + shell_quote(stem + ".request");
  }
  for (const auto& arg : extra) command += " " + shell_quote(arg);
  command += " " + shell_quote(server.url() + path);
  auto [code, status] = run_command(command);
  EXPECT_EQ(status, 0) << command;
  CurlResult result{std::atoi(code.c_str()), read_file(stem + ".body"), read_file(stem + ".headers")};
  for (const char* suffix : {".headers", ".body", ".request"}) std::remove((stem + suffix).c_str());
  return result;
}

// The content deltas of a Server-Sent Events body, and its usage chunk; checks the framing on the way.
struct StreamedAnswer {
  std::string text;
  std::map<int, std::string> by_choice;  // the text of each choice index
  std::optional<json> usage;
  std::string finish_reason;
  bool done = false;
};

StreamedAnswer parse_event_stream(const std::string& body) {
  StreamedAnswer answer;
  std::istringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    EXPECT_EQ(line.rfind("data: ", 0), 0u) << line;
    const std::string data = line.substr(6);
    EXPECT_FALSE(answer.done) << "event after [DONE]: " << data;
    if (data == "[DONE]") {
      answer.done = true;
      continue;
    }
    json chunk = json::parse(data);
    EXPECT_EQ(chunk.at("object"), "chat.completion.chunk");
    if (chunk.contains("usage") && !chunk["usage"].is_null()) answer.usage = chunk["usage"];
    for (const json& choice : chunk.at("choices")) {
      if (choice.at("delta").contains("content")) {
        answer.text += choice["delta"]["content"].get<std::string>();
        answer.by_choice[choice.at("index").get<int>()] += choice["delta"]["content"].get<std::string>();
      }
      if (!choice.at("finish_reason").is_null()) answer.finish_reason = choice["finish_reason"];
    }
  }
  return answer;
}

void expect_openai_error(const CurlResult& result, int status) {
  EXPECT_EQ(result.status, status) << result.body;
  json body = json::parse(result.body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << result.body;
  ASSERT_TRUE(body.contains("error")) << result.body;
  EXPECT_TRUE(body["error"].at("message").is_string());
  EXPECT_TRUE(body["error"].at("type").is_string());
  EXPECT_TRUE(body["error"].contains("code"));
}

// One metric's value in the Prometheus text, or -1.
double metric(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line))
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  return -1;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(access(kBinary.c_str(), X_OK), 0) << kBinary << " is not built";
    // Images over 50000 pixels are refused: image A (64000) is too large, image B (12707) fits.
    server_ = new ServerProcess({"--parallel", "2", "--queue", "16", "--ctx", "256", "--api-key", kApiKey,
                                 "--max-image-pixels", "50000", "--max-body-bytes", "200000",
                                 "--allowed-image-dir", kImageDir, "--timeout", "30"});
    image_answer_ = cli_answer(&kSmallImage, kPrompt, kAnswerTokens);
    text_answer_ = cli_answer(nullptr, kPrompt, kAnswerTokens);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static ServerProcess* server_;
  static std::string image_answer_, text_answer_;
};
ServerProcess* ServerTest::server_ = nullptr;
std::string ServerTest::image_answer_, ServerTest::text_answer_;

TEST_F(ServerTest, HealthModelsAndMetrics) {
  CurlResult health = curl(*server_, "GET", "/health", std::nullopt, "");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(json::parse(health.body).at("status"), "ok");

  CurlResult models = curl(*server_, "GET", "/v1/models");
  ASSERT_EQ(models.status, 200) << models.body;
  json list = json::parse(models.body);
  EXPECT_EQ(list.at("object"), "list");
  ASSERT_EQ(list.at("data").size(), 1u);
  EXPECT_EQ(list["data"][0].at("id"), "tiny-fastvlm");
  EXPECT_EQ(list["data"][0].at("object"), "model");

  curl(*server_, "POST", "/v1/chat/completions", image_request(data_url(kSmallImage, "image/jpeg"), kPrompt, 2).dump());
  CurlResult metrics = curl(*server_, "GET", "/metrics", std::nullopt, "");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.headers.find("text/plain"), std::string::npos);
  EXPECT_GE(metric(metrics.body, "fastvlm_http_responses_total{code=\"200\"}"), 1);
  EXPECT_GE(metric(metrics.body, "fastvlm_time_to_first_token_seconds_count"), 1);
  EXPECT_GE(metric(metrics.body, "fastvlm_time_to_first_token_seconds_bucket{le=\"+Inf\"}"), 1);
  EXPECT_GE(metric(metrics.body, "fastvlm_generated_tokens_total"), 1);
  EXPECT_GE(metric(metrics.body, "fastvlm_queue_depth"), 0);
  EXPECT_GE(metric(metrics.body, "fastvlm_image_cache_hits_total"), 0);
  EXPECT_GE(metric(metrics.body, "fastvlm_vision_encode_seconds_count"), 0);
}

TEST_F(ServerTest, NonStreamingAnswerEqualsTheCli) {
  CurlResult result = curl(*server_, "POST", "/v1/chat/completions",
                           image_request(data_url(kSmallImage, "image/jpeg"), kPrompt, kAnswerTokens).dump());
  ASSERT_EQ(result.status, 200) << result.body;
  json completion = json::parse(result.body);
  EXPECT_EQ(completion.at("object"), "chat.completion");
  EXPECT_EQ(completion.at("model"), "tiny-fastvlm");
  EXPECT_EQ(completion.at("id").get<std::string>().rfind("chatcmpl-", 0), 0u);
  const json& choice = completion.at("choices").at(0);
  EXPECT_EQ(choice.at("message").at("role"), "assistant");
  EXPECT_EQ(choice["message"].at("content"), image_answer_);
  const json& usage = completion.at("usage");
  EXPECT_EQ(usage.at("completion_tokens").get<int>() + usage.at("prompt_tokens").get<int>(),
            usage.at("total_tokens").get<int>());
  EXPECT_LE(usage.at("completion_tokens").get<int>(), kAnswerTokens);
  if (usage["completion_tokens"] == kAnswerTokens) {
    EXPECT_EQ(choice.at("finish_reason"), "length");
  }

  // The same image again (behind another system prompt, so no KV-cache prefix covers it): the
  // embeddings come from the image cache.
  json again = image_request(data_url(kSmallImage, "image/jpeg"), "What colour dominates?", 2);
  const json system_message = {{"role", "system"}, {"content", "Answer briefly."}};
  again["messages"].insert(again["messages"].begin(), system_message);
  CurlResult second = curl(*server_, "POST", "/v1/chat/completions", again.dump());
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_TRUE(json::parse(second.body).at("timings").at("image_cache_hit").get<bool>()) << second.body;
  EXPECT_GE(metric(curl(*server_, "GET", "/metrics").body, "fastvlm_image_cache_hits_total"), 1);
}

// OpenAI's usage: prompt_tokens is the whole prompt whether or not the KV cache held part of it; the part
// it held is prompt_tokens_details.cached_tokens.
TEST_F(ServerTest, UsageCountsTheWholePromptAndReportsTheCachedPart) {
  const std::string body = text_request("Count the whole prompt.", 2).dump();
  std::vector<json> usages;
  for (int i = 0; i < 2; ++i) {
    CurlResult result = curl(*server_, "POST", "/v1/chat/completions", body);
    ASSERT_EQ(result.status, 200) << result.body;
    usages.push_back(json::parse(result.body).at("usage"));
  }
  const int prompt = usages[0].at("prompt_tokens").get<int>();
  EXPECT_GT(prompt, 5);
  EXPECT_EQ(usages[1].at("prompt_tokens").get<int>(), prompt) << usages[1];
  // The repeat takes the slot that holds its prompt, all of it reused but the last position, which is
  // prefilled again for fresh logits.
  EXPECT_EQ(usages[1].at("prompt_tokens_details").at("cached_tokens").get<int>(), prompt - 1) << usages[1];
  EXPECT_LT(usages[0].at("prompt_tokens_details").at("cached_tokens").get<int>(), prompt - 1) << usages[0];
}

TEST_F(ServerTest, TextOnlyAnswerEqualsTheCli) {
  CurlResult result = curl(*server_, "POST", "/v1/chat/completions", text_request(kPrompt, kAnswerTokens).dump());
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(json::parse(result.body)["choices"][0]["message"]["content"], text_answer_);
}

TEST_F(ServerTest, StreamedAnswerEqualsTheCli) {
  json request = image_request(data_url(kSmallImage, "image/jpeg"), kPrompt, kAnswerTokens, true);
  request["stream_options"] = {{"include_usage", true}};
  CurlResult result = curl(*server_, "POST", "/v1/chat/completions", request.dump(), kApiKey, {"-N"});
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_NE(result.headers.find("text/event-stream"), std::string::npos) << result.headers;
  StreamedAnswer answer = parse_event_stream(result.body);
  EXPECT_TRUE(answer.done);
  EXPECT_EQ(answer.text, image_answer_);
  EXPECT_FALSE(answer.finish_reason.empty());
  ASSERT_TRUE(answer.usage.has_value()) << result.body;
  EXPECT_LE(answer.usage->at("completion_tokens").get<int>(), kAnswerTokens);
}

TEST_F(ServerTest, LocalImagePathInsideTheAllowedDirectory) {
  CurlResult result = curl(*server_, "POST", "/v1/chat/completions",
                           image_request("file://" + kSmallImage, kPrompt, kAnswerTokens).dump());
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(json::parse(result.body)["choices"][0]["message"]["content"], image_answer_);
  expect_openai_error(
      curl(*server_, "POST", "/v1/chat/completions", image_request("file://" + kModel + "/config.json", kPrompt, 2).dump()),
      400);
}

TEST_F(ServerTest, ErrorsHaveOpenAiShapeAndStatus) {
  auto post = [&](const std::string& body, const std::string& key = kApiKey) {
    return curl(*server_, "POST", "/v1/chat/completions", body, key);
  };
  const std::string valid = text_request("hi", 2).dump();
  expect_openai_error(post("{\"messages\": [", kApiKey), 400);                                  // malformed JSON
  expect_openai_error(post(image_request("data:image/jpeg;base64,@@@notbase64", kPrompt, 2).dump()), 400);
  expect_openai_error(post(image_request("data:image/png;base64," + encode_base64("plain text, no image"), kPrompt, 2).dump()),
                      400);                                                                      // not an image
  expect_openai_error(post(image_request(data_url(kLargeImage, "image/png"), kPrompt, 2).dump()), 400);  // pixels
  expect_openai_error(post(image_request("https://example.com/cat.png", kPrompt, 2).dump()), 400);
  expect_openai_error(post(std::string(300000, ' ') + valid), 413);                             // body limit
  expect_openai_error(post(valid, ""), 401);                                                    // no key
  expect_openai_error(post(valid, "wrong-key"), 401);
  std::string long_prompt;
  for (int i = 0; i < 400; ++i) long_prompt += "word ";
  expect_openai_error(post(text_request(long_prompt, 2).dump()), 400);                         // over --ctx 256
  expect_openai_error(curl(*server_, "GET", "/v1/nothing-here"), 404);
  // The same failures streamed still get their status, since nothing was sent yet.
  json streamed = image_request(data_url(kLargeImage, "image/png"), kPrompt, 2, true);
  expect_openai_error(post(streamed.dump()), 400);
  // After all that the server still answers.
  EXPECT_EQ(post(valid).status, 200);
}

// One streamed request read by httplib; `stop_after_chunks` > 0 closes the connection after that many
// chunks (a client that disconnects).
struct StreamOutcome {
  int status = 0;
  std::string body;
  bool cancelled = false;
};
StreamOutcome stream_with_httplib(int port, const json& request, int stop_after_chunks = 0,
                                  const std::string& api_key = kApiKey) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(60, 0);
  client.set_connection_timeout(10, 0);
  StreamOutcome outcome;
  int chunks = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.headers = {{"Authorization", "Bearer " + api_key}, {"Content-Type", "application/json"}};
  req.body = request.dump();
  req.response_handler = [&](const httplib::Response& res) {
    outcome.status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    outcome.body.append(data, size);
    if (stop_after_chunks > 0 && ++chunks >= stop_after_chunks) {
      outcome.cancelled = true;
      return false;
    }
    return true;
  };
  client.send(req);
  return outcome;
}

TEST(ServerSlots, DisconnectFreesTheSlotAndAFullQueueGets503) {
  // One slot, no queue: a second request while the first runs is turned away at once.
  ServerProcess server({"--parallel", "1", "--queue", "0", "--ctx", "4096", "--api-key", kApiKey});
  json long_request = text_request("Count to a thousand.", 4000);
  long_request["stream"] = true;

  // A client that reads three chunks and hangs up.
  StreamOutcome left = stream_with_httplib(server.port(), long_request, 3);
  ASSERT_EQ(left.status, 200);
  ASSERT_TRUE(left.cancelled);

  // The disconnected generation is cancelled: the slot frees long before 4000 tokens would be done.
  auto until_idle = Clock::now() + std::chrono::seconds(20);
  json health;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    health = json::parse(curl(server, "GET", "/health", std::nullopt, "").body);
  } while (health.at("slots_busy") != 0 && Clock::now() < until_idle);
  EXPECT_EQ(health.at("slots_busy"), 0);
  EXPECT_GE(metric(curl(server, "GET", "/metrics", std::nullopt, "").body, "fastvlm_cancelled_requests_total"), 1);

  // Queue full: hold the only slot with a stream that is read slowly, then ask again.
  std::atomic<bool> holding{false}, release{false};
  std::thread slow_reader([&] {
    httplib::Client client("127.0.0.1", server.port());
    client.set_read_timeout(60, 0);
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.headers = {{"Authorization", "Bearer " + kApiKey}};
    req.body = long_request.dump();
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      holding = true;
      return !release.load();
    };
    client.send(req);
  });
  for (auto deadline = Clock::now() + std::chrono::seconds(30); !holding && Clock::now() < deadline;)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(holding);
  CurlResult busy = curl(server, "POST", "/v1/chat/completions", text_request("hi", 2).dump());
  expect_openai_error(busy, 503);
  EXPECT_NE(busy.headers.find("Retry-After:"), std::string::npos) << busy.headers;
  release = true;
  slow_reader.join();

  // The slot is free again and serves the next request.
  CurlResult after;
  for (auto deadline = Clock::now() + std::chrono::seconds(20); Clock::now() < deadline;) {
    after = curl(server, "POST", "/v1/chat/completions", text_request("hi", 2).dump());
    if (after.status != 503) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(server.stop(), 0) << "the server must exit cleanly on SIGTERM";
}

TEST(ServerSlots, SigtermWithAStreamInFlightExitsPromptly) {
  ServerProcess server({"--parallel", "1", "--ctx", "4096"});
  json long_request = text_request("Count to a thousand.", 4000);  // about 15 s of generation
  long_request["stream"] = true;
  std::atomic<bool> streaming{false};
  std::thread reader([&] {
    httplib::Client client("127.0.0.1", server.port());
    client.set_read_timeout(60, 0);
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.body = long_request.dump();
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      streaming = true;
      return true;
    };
    client.send(req);
  });
  for (auto deadline = Clock::now() + std::chrono::seconds(30); !streaming && Clock::now() < deadline;)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(streaming);
  const auto start = Clock::now();
  EXPECT_EQ(server.stop(), 0);
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 5.0);
  reader.join();
}

// A plain TCP connection to the server, for what an HTTP client library would not send.
class RawConnection {
 public:
  explicit RawConnection(int port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(uint16_t(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  }
  ~RawConnection() { close(fd_); }
  bool send_all(const std::string& data) {
    for (size_t sent = 0; sent < data.size();) {
      const ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += size_t(n);
    }
    return true;
  }
  // Everything the server sends until it closes the connection or stays silent for `quiet`.
  std::string receive(std::chrono::milliseconds quiet, bool* closed = nullptr) {
    std::string received;
    if (closed) *closed = false;
    for (;;) {
      pollfd fd{fd_, POLLIN, 0};
      if (poll(&fd, 1, int(quiet.count())) <= 0) return received;
      char buffer[4096];
      const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) {
        if (closed) *closed = true;
        return received;
      }
      received.append(buffer, size_t(n));
    }
  }

 private:
  int fd_;
};

// How many HTTP responses a byte stream holds: status lines, which follow the previous body directly.
int count_responses(const std::string& received) {
  int count = 0;
  for (size_t at = received.find("HTTP/1.1 "); at != std::string::npos; at = received.find("HTTP/1.1 ", at + 1))
    ++count;
  return count;
}

TEST(ServerHardening, AnEarlyErrorNeverLetsTheBodyBeReadAsTheNextRequest) {
  ServerProcess server({"--api-key", kApiKey, "--max-body-bytes", "1000"});
  const std::string smuggled = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  // The head and the body as two sends: a body that arrives after the head was answered is what a
  // server that does not read it would take for the next request.
  auto post = [&](const std::string& key, const std::string& body, const std::string& framing) {
    return std::pair("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
                         "\r\nContent-Type: application/json\r\n" + framing + "\r\n",
                     body);
  };
  auto chunked = [](const std::vector<std::string>& chunks) {
    std::ostringstream body;
    for (const std::string& chunk : chunks) body << std::hex << chunk.size() << "\r\n" << chunk << "\r\n";
    return body.str() + "0\r\n\r\n";
  };
  const std::string padding(2000, ' ');
  const std::vector<std::pair<int, std::pair<std::string, std::string>>> cases = {
      {401, post("wrong", smuggled, "Content-Length: " + std::to_string(smuggled.size()) + "\r\n")},
      {401, post("wrong", chunked({smuggled}), "Transfer-Encoding: chunked\r\n")},
      {413, post(kApiKey, padding + smuggled, "Content-Length: " + std::to_string(padding.size() + smuggled.size()) + "\r\n")},
      {413, post(kApiKey, chunked({padding, smuggled}), "Transfer-Encoding: chunked\r\n")},
  };
  for (const auto& [status, request] : cases) {
    RawConnection connection(server.port());
    ASSERT_TRUE(connection.send_all(request.first));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    connection.send_all(request.second);  // may fail: the server is allowed to have closed the connection
    bool closed = false;
    const std::string received = connection.receive(std::chrono::milliseconds(1000), &closed);
    EXPECT_EQ(received.rfind("HTTP/1.1 " + std::to_string(status), 0), 0u) << received;
    EXPECT_EQ(count_responses(received), 1) << "the body was answered as a request:\n" << received;
    if (!closed) {  // a connection left open must still be in step: a real request gets its answer
      ASSERT_TRUE(connection.send_all(smuggled));
      const std::string next = connection.receive(std::chrono::milliseconds(1000));
      EXPECT_EQ(next.rfind("HTTP/1.1 200", 0), 0u) << next;
    }
  }
}

TEST(ServerHardening, HeadersAreBoundedInCountAndSize) {
  ServerProcess server({});
  {  // many small headers
    RawConnection connection(server.port());
    std::string request = "GET /health HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < 500; ++i) request += "X-Filler-" + std::to_string(i) + ": a\r\n";
    connection.send_all(request + "\r\n");
    const std::string received = connection.receive(std::chrono::milliseconds(2000));
    EXPECT_EQ(received.rfind("HTTP/1.1 431", 0), 0u) << received.substr(0, 200);
  }
  {  // a few large ones
    RawConnection connection(server.port());
    std::string request = "GET /health HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < 20; ++i) request += "X-Filler-" + std::to_string(i) + ": " + std::string(8000, 'a') + "\r\n";
    connection.send_all(request + "\r\n");
    const std::string received = connection.receive(std::chrono::milliseconds(2000));
    EXPECT_EQ(received.rfind("HTTP/1.1 431", 0), 0u) << received.substr(0, 200);
  }
}

TEST(ServerHardening, AHeadThatNeverEndsIsCutOffAfterTheHeaderTimeout) {
  ServerProcess server({"--header-timeout", "2"});
  {  // cut off after --header-timeout, not after --timeout
    RawConnection connection(server.port());
    connection.send_all("GET /health HTTP/1.1\r\nHost: x\r\n");
    const auto start = Clock::now();
    bool closed = false;
    connection.receive(std::chrono::milliseconds(6000), &closed);
    EXPECT_TRUE(closed);
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 5.0);
  }
}

TEST(ServerHardening, HealthAnswersWhileManyConnectionsAreHalfOpenAndSlotsBusy) {
  ServerProcess server({"--parallel", "1", "--queue", "2", "--ctx", "4096", "--timeout", "60"});
  // Every slot and queue place taken by long generations...
  std::vector<std::thread> generations;
  for (int i = 0; i < 3; ++i)
    generations.emplace_back([&] {
      httplib::Client client("127.0.0.1", server.port());
      client.set_read_timeout(60, 0);
      client.Post("/v1/chat/completions", text_request("Count to a thousand.", 100).dump(), "application/json");
    });
  // ...and more connections that never finish their request head than the server has threads.
  std::vector<std::unique_ptr<RawConnection>> half_open;
  for (int i = 0; i < 40; ++i) {
    half_open.push_back(std::make_unique<RawConnection>(server.port()));
    half_open.back()->send_all("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  for (const char* path : {"/health", "/metrics"}) {
    const auto start = Clock::now();
    CurlResult result = curl(server, "GET", path, std::nullopt, "", {"--max-time", "3"});
    EXPECT_EQ(result.status, 200) << path;
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 1.0) << path;
  }
  half_open.clear();
  for (auto& generation : generations) generation.join();
}

TEST(ServerHardening, ConnectionsBeyondTheCapGetAFast503) {
  ServerProcess server({"--max-connections", "8", "--header-timeout", "30"});
  std::vector<std::unique_ptr<RawConnection>> held;
  for (int i = 0; i < 8; ++i) {  // complete heads of requests whose bodies never come
    held.push_back(std::make_unique<RawConnection>(server.port()));
    held.back()->send_all("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  RawConnection extra(server.port());
  extra.send_all("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
  const auto start = Clock::now();
  const std::string received = extra.receive(std::chrono::milliseconds(2000));
  EXPECT_EQ(received.rfind("HTTP/1.1 503", 0), 0u) << received;
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 1.0);
}

TEST(ServerHardening, ANonStreamingClientThatLeavesFreesItsSlot) {
  ServerProcess server({"--parallel", "1", "--ctx", "4096"});
  {
    RawConnection connection(server.port());
    const std::string body = text_request("Count to a thousand.", 4000).dump();  // about 15 s of generation
    connection.send_all("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }  // the client hangs up without reading its answer
  json health;
  for (auto deadline = Clock::now() + std::chrono::seconds(4); Clock::now() < deadline;) {
    health = json::parse(curl(server, "GET", "/health", std::nullopt, "").body);
    if (health.at("slots_busy") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(health.at("slots_busy"), 0) << "the slot still generates for a client that left";
  EXPECT_GE(metric(curl(server, "GET", "/metrics", std::nullopt, "").body, "fastvlm_cancelled_requests_total"), 1);
}

TEST(ServerHardening, RequestTimeoutEndsALongGeneration) {
  ServerProcess server({"--parallel", "1", "--ctx", "4096", "--request-timeout", "1"});
  const auto start = Clock::now();
  CurlResult result = curl(server, "POST", "/v1/chat/completions", text_request("Count to a thousand.", 4000).dump(), "");
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 4.0);
  ASSERT_EQ(result.status, 200) << result.body;
  EXPECT_EQ(json::parse(result.body)["choices"][0]["finish_reason"], "length");
}

double percentile(std::vector<double> values, double fraction) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, size_t(fraction * double(values.size())))];
}

TEST_F(ServerTest, LoadTestEightClientsTwoHundredRequests) {
  constexpr int kClients = 8, kRequests = 200, kTokens = 8;
  const std::string image_answer = cli_answer(&kSmallImage, kPrompt, kTokens);
  const std::string text_answer = cli_answer(nullptr, kPrompt, kTokens);
  const std::string image_url = data_url(kSmallImage, "image/jpeg");
  std::atomic<int> next{0}, wrong{0}, valid_ok{0}, invalid_4xx{0}, cancelled{0};
  std::mutex latencies_mutex;
  std::vector<double> latencies_ms;
  std::vector<std::string> failures;
  auto fail = [&](const std::string& failure) {
    std::lock_guard lock(latencies_mutex);
    failures.push_back(failure);
  };

  auto client_loop = [&] {
    httplib::Client client("127.0.0.1", server_->port());
    client.set_read_timeout(60, 0);
    const httplib::Headers auth = {{"Authorization", "Bearer " + kApiKey}};
    for (int i; (i = next++) < kRequests;) {
      const auto start = Clock::now();
      bool is_valid = false, correct = false;
      switch (i % 5) {
        case 0: {  // image, one JSON answer
          auto res = client.Post("/v1/chat/completions", auth, image_request(image_url, kPrompt, kTokens).dump(),
                                 "application/json");
          is_valid = true;
          correct = res && res->status == 200 &&
                    json::parse(res->body)["choices"][0]["message"]["content"] == image_answer;
          break;
        }
        case 1: {  // image, streamed
          StreamOutcome outcome = stream_with_httplib(server_->port(), image_request(image_url, kPrompt, kTokens, true));
          is_valid = true;
          correct = outcome.status == 200 && parse_event_stream(outcome.body).text == image_answer;
          break;
        }
        case 2: {  // streamed, the client leaves after the first chunk
          json request = text_request(kPrompt, 200);
          request["stream"] = true;
          StreamOutcome outcome = stream_with_httplib(server_->port(), request, 1);
          cancelled += outcome.cancelled;
          if (!outcome.cancelled) fail("request " + std::to_string(i) + " was not cancelled");
          continue;
        }
        case 3: {  // invalid: alternately bad JSON and bad base64
          std::string body = i % 2 ? "{\"messages\": 5" : image_request("data:image/png;base64,%%%", kPrompt, 2).dump();
          auto res = client.Post("/v1/chat/completions", auth, body, "application/json");
          if (res && res->status >= 400 && res->status < 500) ++invalid_4xx;
          else fail("invalid request " + std::to_string(i) + " got " + (res ? std::to_string(res->status) : "no response"));
          continue;
        }
        case 4: {  // text only
          auto res = client.Post("/v1/chat/completions", auth, text_request(kPrompt, kTokens).dump(), "application/json");
          is_valid = true;
          correct = res && res->status == 200 && json::parse(res->body)["choices"][0]["message"]["content"] == text_answer;
          break;
        }
      }
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      std::lock_guard lock(latencies_mutex);
      if (is_valid) latencies_ms.push_back(ms);
      if (correct) ++valid_ok;
      else failures.push_back("valid request " + std::to_string(i) + " answered wrongly");
    }
  };
  const auto start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) clients.emplace_back(client_loop);
  for (auto& client : clients) client.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  for (const auto& failure : failures) ADD_FAILURE() << failure;
  EXPECT_EQ(valid_ok.load(), kRequests * 3 / 5);
  EXPECT_EQ(invalid_4xx.load(), kRequests / 5);
  EXPECT_EQ(cancelled.load(), kRequests / 5);
  std::printf("load test: %d requests from %d clients in %.2f s (%.1f requests/s); valid requests p50 %.1f ms, "
              "p99 %.1f ms\n",
              kRequests, kClients, seconds, kRequests / seconds, percentile(latencies_ms, 0.5),
              percentile(latencies_ms, 0.99));
  CurlResult health = curl(*server_, "GET", "/health", std::nullopt, "");
  EXPECT_EQ(health.status, 200);
  CurlResult after = curl(*server_, "POST", "/v1/chat/completions",
                          image_request(image_url, kPrompt, kAnswerTokens).dump());
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(json::parse(after.body)["choices"][0]["message"]["content"], image_answer_);
}

}  // namespace

namespace {

// Resident memory of a process, from /proc.
double rss_megabytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return -1;
}

// The status code of the first response in a byte stream, or 0.
int first_status(const std::string& received) {
  return received.rfind("HTTP/1.1 ", 0) == 0 && received.size() >= 12 ? std::atoi(received.c_str() + 9) : 0;
}

// About a thousand requests from eight clients mixing good ones (images and text, streamed and not) with
// every kind of hostile input, while /health is polled. Bounded: it stops after kRequests or 80 s.
TEST(ServerSoak, GoodRequestsStayCorrectAndTheServerStaysResponsive) {
  constexpr int kClients = 8, kRequests = 1000, kTokens = 4;
  constexpr double kRssGrowthBoundMb = 64;
  ServerProcess server({"--parallel", "2", "--queue", "16", "--ctx", "256", "--api-key", kApiKey, "--max-body-bytes",
                        "200000", "--header-timeout", "2"});
  const std::string image_url = data_url(kSmallImage, "image/jpeg");
  const httplib::Headers auth = {{"Authorization", "Bearer " + kApiKey}};
  auto answer_alone = [&](const json& request) {
    httplib::Client client("127.0.0.1", server.port());
    client.set_read_timeout(60, 0);
    auto res = client.Post("/v1/chat/completions", auth, request.dump(), "application/json");
    EXPECT_TRUE(res && res->status == 200);
    return res ? json::parse(res->body)["choices"][0]["message"]["content"].get<std::string>() : std::string();
  };
  // The reference answers come from each request sent alone; they also warm the caches before the RSS baseline.
  const std::string image_answer = answer_alone(image_request(image_url, kPrompt, kTokens));
  const std::string text_answer = answer_alone(text_request(kPrompt, kTokens));
  const double rss_before = rss_megabytes(server.pid());

  std::atomic<bool> done{false};
  std::vector<double> health_ms;
  int health_failures = 0;
  std::thread health_poller([&] {
    while (!done) {
      httplib::Client client("127.0.0.1", server.port());
      client.set_connection_timeout(2, 0);
      client.set_read_timeout(2, 0);
      const auto start = Clock::now();
      auto res = client.Get("/health");
      health_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
      health_failures += !res || res->status != 200;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });

  std::mutex mutex;
  std::map<std::string, int> outcomes;
  std::vector<std::string> failures;
  auto record = [&](const std::string& kind, bool ok, const std::string& detail) {
    std::lock_guard lock(mutex);
    ++outcomes[kind + (ok ? " ok" : " WRONG")];
    if (!ok) failures.push_back(kind + ": " + detail.substr(0, 300));
  };
  const auto give_up = Clock::now() + std::chrono::seconds(80);
  std::atomic<int> next{0};
  auto client_loop = [&] {
    httplib::Client client("127.0.0.1", server.port());
    client.set_read_timeout(60, 0);
    for (int i; (i = next++) < kRequests && Clock::now() < give_up;) {
      switch (i % 10) {
        case 0:
        case 1: {  // good: image or text, one JSON answer, on a kept-alive connection
          const bool image = i % 10 == 0;
          auto res = client.Post("/v1/chat/completions", auth,
                                 (image ? image_request(image_url, kPrompt, kTokens) : text_request(kPrompt, kTokens)).dump(),
                                 "application/json");
          const bool ok = res && res->status == 200 &&
                          json::parse(res->body)["choices"][0]["message"]["content"] == (image ? image_answer : text_answer);
          record(image ? "image" : "text", ok, res ? res->body : "no response");
          break;
        }
        case 2:
        case 3: {  // good: image or text, streamed
          const bool image = i % 10 == 2;
          json request = image ? image_request(image_url, kPrompt, kTokens, true) : text_request(kPrompt, kTokens);
          request["stream"] = true;
          StreamOutcome outcome = stream_with_httplib(server.port(), request);
          const StreamedAnswer answer = parse_event_stream(outcome.body);
          record(image ? "image streamed" : "text streamed",
                 outcome.status == 200 && answer.done && answer.text == (image ? image_answer : text_answer), outcome.body);
          break;
        }
        case 4: {  // malformed JSON
          auto res = client.Post("/v1/chat/completions", auth, "{\"messages\": [", "application/json");
          record("malformed JSON", res && res->status == 400, res ? res->body : "no response");
          break;
        }
        case 5: {  // a body over --max-body-bytes, refused from its Content-Length before it is sent
          RawConnection connection(server.port());
          connection.send_all("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kApiKey +
                              "\r\nContent-Length: 5000000\r\n\r\n" + std::string(1000, ' '));
          const std::string received = connection.receive(std::chrono::milliseconds(2000));
          record("oversized body", first_status(received) == 413, received);
          break;
        }
        case 6: {  // a wrong key on a kept-alive connection, the body (a request) sent after the head
          RawConnection connection(server.port());
          const std::string smuggled = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
          connection.send_all("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                              "Content-Length: " + std::to_string(smuggled.size()) + "\r\n\r\n");
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          connection.send_all(smuggled);
          const std::string received = connection.receive(std::chrono::milliseconds(300));
          record("401 keep-alive", first_status(received) == 401 && count_responses(received) == 1, received);
          break;
        }
        case 7: {  // a header flood
          RawConnection connection(server.port());
          std::string request = "GET /health HTTP/1.1\r\nHost: x\r\n";
          for (int h = 0; h < 2000; ++h) request += "X-Flood-" + std::to_string(h) + ": " + std::string(100, 'a') + "\r\n";
          connection.send_all(request + "\r\n");
          const std::string received = connection.receive(std::chrono::milliseconds(2000));
          record("header flood", first_status(received) == 431, received);
          break;
        }
        case 8: {  // a stream the client leaves after its first chunk, and one it leaves mid-answer
          json request = text_request(kPrompt, 200);
          request["stream"] = true;
          StreamOutcome outcome = stream_with_httplib(server.port(), request, i % 20 == 8 ? 1 : 3);
          record("left stream", outcome.status == 200 && outcome.cancelled, outcome.body);
          break;
        }
        case 9: {  // a slow client (its head in pieces) and a half-open one (a head that never ends)
          RawConnection connection(server.port());
          const std::string head = "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kApiKey + "\r\n\r\n";
          if (i % 20 == 9) {
            connection.send_all(head.substr(0, head.size() / 2));
            std::this_thread::sleep_for(std::chrono::milliseconds(3000));  // past --header-timeout
            bool closed = false;
            const std::string received = connection.receive(std::chrono::milliseconds(500), &closed);
            record("half-open", first_status(received) == 408 && closed, received);
          } else {
            for (size_t at = 0; at < head.size(); at += 16) {
              connection.send_all(head.substr(at, 16));
              std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
            const std::string received = connection.receive(std::chrono::milliseconds(1000));
            record("slow client", first_status(received) == 200, received);
          }
          break;
        }
      }
    }
  };
  const auto start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) clients.emplace_back(client_loop);
  for (auto& client : clients) client.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  done = true;
  health_poller.join();
  // A last good request: the slots are free and correct after the storm.
  EXPECT_EQ(answer_alone(image_request(image_url, kPrompt, kTokens)), image_answer);
  const double rss_after = rss_megabytes(server.pid());

  int total = 0;
  std::printf("soak: %d requests from %d clients in %.1f s\n", std::min(next.load(), kRequests), kClients, seconds);
  for (const auto& [kind, count] : outcomes) {
    std::printf("  %-24s %d\n", kind.c_str(), count);
    total += count;
  }
  std::printf("  /health: %zu polls, p50 %.1f ms, max %.1f ms, %d failed\n", health_ms.size(),
              percentile(health_ms, 0.5), percentile(health_ms, 1.0), health_failures);
  std::printf("  server RSS: %.1f MB before, %.1f MB after (bound: +%.0f MB)\n", rss_before, rss_after,
              kRssGrowthBoundMb);
  for (const auto& failure : failures) ADD_FAILURE() << failure;
  EXPECT_EQ(total, kRequests) << "the soak did not finish within its time";
  EXPECT_EQ(health_failures, 0);
  EXPECT_LT(percentile(health_ms, 1.0), 1000.0);
  EXPECT_LT(rss_after - rss_before, kRssGrowthBoundMb);
  EXPECT_EQ(server.stop(), 0);
}

}  // namespace

namespace {

// Continuous batching under faults: four slots decode together while clients leave mid-stream, a flood
// overruns the queue, a prompt exceeds a slot's share of the KV budget, and n choices stream at once.
// Every accepted request gets the answer it would get alone, and the server is healthy afterwards.
TEST(ServerBatching, FaultsLoseNoAcceptedAnswerAndLeaveTheServerHealthy) {
  ServerProcess server({"--parallel", "4", "--queue", "2", "--kv-budget", "1024", "--prefill-chunk", "8",
                        "--api-key", kApiKey, "--timeout", "30"});
  const std::string prompt = "Tell me about the sea.";
  constexpr int kTokens = 40;
  const std::string expected = cli_answer(nullptr, prompt, kTokens);

  // Over the budget: 1024 positions over 4 slots leave 256 a slot.
  std::string long_text;
  for (int i = 0; i < 300; ++i) long_text += "sea ";
  CurlResult too_long = curl(server, "POST", "/v1/chat/completions", text_request(long_text, 4).dump());
  expect_openai_error(too_long, 400);
  EXPECT_NE(too_long.body.find("does not fit the context of 256"), std::string::npos) << too_long.body;

  // Streams that leave after a few chunks, beside a flood of plain requests.
  json leaving = text_request("Count to a thousand.", 200);
  leaving["stream"] = true;
  std::vector<std::thread> clients;
  std::vector<StreamOutcome> left(3);
  for (int i = 0; i < 3; ++i)
    clients.emplace_back([&, i] { left[size_t(i)] = stream_with_httplib(server.port(), leaving, 3 + 5 * i); });
  std::vector<CurlResult> flood(16);
  for (int i = 0; i < 16; ++i)
    clients.emplace_back([&, i] {
      flood[size_t(i)] = curl(server, "POST", "/v1/chat/completions", text_request(prompt, kTokens).dump());
    });
  for (auto& client : clients) client.join();
  for (const StreamOutcome& outcome : left) {
    EXPECT_TRUE(outcome.status == 200 || outcome.status == 503) << outcome.status;
    if (outcome.status == 200) EXPECT_TRUE(outcome.cancelled);
  }
  int accepted = 0, busy = 0;
  for (const CurlResult& result : flood) {
    if (result.status == 503) {
      ++busy;
      expect_openai_error(result, 503);
      EXPECT_NE(result.headers.find("Retry-After:"), std::string::npos) << result.headers;
      continue;
    }
    ASSERT_EQ(result.status, 200) << result.body;
    ++accepted;
    const json body = json::parse(result.body);
    EXPECT_EQ(body["choices"][0]["message"]["content"], expected) << "an accepted answer differs from the one alone";
  }
  EXPECT_GE(accepted, 2);  // beside the three streams: one free slot and the queue of two at least
  EXPECT_GE(busy, 1) << "16 requests at once on 4 slots and a queue of 2 must overflow";

  // n choices at once: greedy ones are all the answer alone; seeded sampled ones stream what they return
  // whole, each under its index.
  json greedy = text_request(prompt, kTokens);
  greedy["n"] = 3;
  greedy["stream"] = true;
  CurlResult streamed = curl(server, "POST", "/v1/chat/completions", greedy.dump(), kApiKey, {"-N"});
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  StreamedAnswer choices = parse_event_stream(streamed.body);
  EXPECT_TRUE(choices.done);
  ASSERT_EQ(choices.by_choice.size(), 3u) << streamed.body;
  for (const auto& [index, text] : choices.by_choice) EXPECT_EQ(text, expected) << "choice " << index;

  json sampled = text_request(prompt, kTokens);
  sampled["n"] = 3;
  sampled["temperature"] = 0.9;
  sampled["seed"] = 11;
  CurlResult whole = curl(server, "POST", "/v1/chat/completions", sampled.dump());
  ASSERT_EQ(whole.status, 200) << whole.body;
  sampled["stream"] = true;
  CurlResult sampled_stream = curl(server, "POST", "/v1/chat/completions", sampled.dump(), kApiKey, {"-N"});
  ASSERT_EQ(sampled_stream.status, 200) << sampled_stream.body;
  const json whole_body = json::parse(whole.body);
  const StreamedAnswer sampled_choices = parse_event_stream(sampled_stream.body);
  ASSERT_EQ(whole_body["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(sampled_choices.by_choice.at(i), whole_body["choices"][i]["message"]["content"]) << "choice " << i;
  EXPECT_NE(whole_body["choices"][0]["message"]["content"], whole_body["choices"][1]["message"]["content"])
      << "choices with seeds 11 and 12 should differ";

  // Healthy afterwards: every slot free, the batch figures exported, a plain request answered.
  json health;
  for (auto until = Clock::now() + std::chrono::seconds(20); Clock::now() < until;) {
    health = json::parse(curl(server, "GET", "/health", std::nullopt, "").body);
    if (health.at("slots_busy") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(health.at("status"), "ok");
  EXPECT_EQ(health.at("slots_busy"), 0);
  const std::string metrics = curl(server, "GET", "/metrics", std::nullopt, "").body;
  EXPECT_GE(metric(metrics, "fastvlm_batch_size"), 1);
  EXPECT_GE(metric(metrics, "fastvlm_decode_tokens_per_second"), 0);
  EXPECT_GE(metric(metrics, "fastvlm_cancelled_requests_total"), 1);
  const json props = json::parse(curl(server, "GET", "/props").body);
  EXPECT_EQ(props.at("total_slots"), 4);
  EXPECT_EQ(props.at("n_ctx"), 256);
  CurlResult last = curl(server, "POST", "/v1/chat/completions", text_request(prompt, kTokens).dump());
  ASSERT_EQ(last.status, 200) << last.body;
  EXPECT_EQ(json::parse(last.body)["choices"][0]["message"]["content"], expected);
  EXPECT_EQ(server.stop(), 0);
}

}  // namespace
