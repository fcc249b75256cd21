// The hub client against FakeHub, an HTTP server on 127.0.0.1 inside the test process that serves the
// tiny-fastvlm fixture the way huggingface.co does: the API listing with blob ids and LFS sha256, resolve
// URLs that redirect LFS files to a blob URL, Range requests, ETag/X-Linked-Etag/X-Repo-Commit headers.
// Switches make it drop a connection, corrupt a file, demand a token. No traffic leaves the loopback.

// libcpp-httplib is built with these (its pkg-config Cflags); the class layouts depend on them.
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
#define CPPHTTPLIB_OPENSSL_SUPPORT
#endif
#ifndef CPPHTTPLIB_ZLIB_SUPPORT
#define CPPHTTPLIB_ZLIB_SUPPORT
#endif
#ifndef CPPHTTPLIB_BROTLI_SUPPORT
#define CPPHTTPLIB_BROTLI_SUPPORT
#endif
#include <httplib.h>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "hub/hub.h"
#include "io/checkpoint.h"
#include "run_command.h"

namespace fs = std::filesystem;
using namespace fastvlm;

namespace {

const fs::path kFixtureDir = fs::path(FASTVLM_SHARED_DIR) / "fixtures" / "tiny-fastvlm";
constexpr const char* kRepo = "apple/FastVLM-0.5B";
constexpr const char* kRepoFolder = "models--apple--FastVLM-0.5B";
constexpr const char* kCommit = "5c0ffee5c0ffee5c0ffee5c0ffee5c0ffee5c0ff";
// The files a FastVLM checkpoint directory holds that the engine reads (README.md is served but not needed).
const std::vector<std::string> kEngineFiles = {"added_tokens.json", "config.json",       "generation_config.json",
                                               "merges.txt",        "model.safetensors", "special_tokens_map.json",
                                               "tokenizer_config.json", "vocab.json"};

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string hex_digest(const EVP_MD* kind, const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, kind, nullptr);
  std::string hex;
  char byte[3];
  for (unsigned int i = 0; i < length; ++i) {
    std::snprintf(byte, sizeof byte, "%02x", digest[i]);
    hex += byte;
  }
  return hex;
}

// A file as the hub stores it: LFS files are addressed by their sha256, the others by git's blob id.
struct HostedFile {
  std::string bytes;
  bool is_lfs = false;
  std::string git_blob_id;
  std::string sha256;
  const std::string& blob_id() const { return is_lfs ? sha256 : git_blob_id; }
};

std::map<std::string, HostedFile> load_fixture_repo() {
  std::map<std::string, HostedFile> files;
  for (const auto& entry : fs::directory_iterator(kFixtureDir)) {
    if (!entry.is_regular_file()) continue;
    HostedFile file;
    file.bytes = read_bytes(entry.path());
    file.is_lfs = entry.path().extension() == ".safetensors";
    file.git_blob_id = hex_digest(EVP_sha1(), "blob " + std::to_string(file.bytes.size()) + '\0' + file.bytes);
    file.sha256 = hex_digest(EVP_sha256(), file.bytes);
    files[entry.path().filename().string()] = std::move(file);
  }
  return files;
}

struct RecordedRequest {
  std::string path;
  std::string range;
  std::string authorization;
};

class FakeHub {
 public:
  FakeHub() : files_(load_fixture_repo()) {
    server_.set_pre_routing_handler([this](const httplib::Request& request, httplib::Response&) {
      std::lock_guard lock(mutex_);
      requests_.push_back({request.path, request.get_header_value("Range"), request.get_header_value("Authorization")});
      return httplib::Server::HandlerResponse::Unhandled;
    });
    server_.Get(R"(/api/models/([^/]+/[^/]+)/revision/([^/]+))", [this](const auto& request, auto& response) {
      if (!authorized(request, response) || !known(request.matches[1], request.matches[2], response)) return;
      nlohmann::json siblings = nlohmann::json::array();
      for (const auto& [name, file] : files_) {
        nlohmann::json sibling = {{"rfilename", name}};
        if (request.has_param("blobs")) {  // the real hub gives sizes and ids only when asked
          sibling["blobId"] = file.git_blob_id;
          sibling["size"] = file.bytes.size();
          if (file.is_lfs)
            sibling["lfs"] = {{"sha256", file.sha256}, {"size", file.bytes.size()}, {"pointerSize", 134}};
        }
        siblings.push_back(sibling);
      }
      nlohmann::json info = {{"id", kRepo}, {"sha", kCommit}, {"siblings", siblings}};
      response.set_content(edit_listing ? edit_listing(info) : info.dump(), "application/json");
    });
    server_.Get(R"(/([^/]+/[^/]+)/resolve/([^/]+)/(.+))", [this](const auto& request, auto& response) {
      if (!authorized(request, response) || !known(request.matches[1], request.matches[2], response)) return;
      auto found = files_.find(request.matches[3]);
      if (found == files_.end()) return not_found(response, "EntryNotFound");
      const HostedFile& file = found->second;
      response.set_header("X-Repo-Commit", kCommit);
      response.set_header("ETag", "\"" + file.git_blob_id + "\"");
      if (file.is_lfs) {  // LFS content lives elsewhere (a CDN on the real hub)
        response.set_header("X-Linked-Etag", "\"" + file.sha256 + "\"");
        response.set_header("X-Linked-Size", std::to_string(file.bytes.size()));
        response.set_redirect("/blobs/" + file.sha256);
        return;
      }
      response.set_content(file.bytes, "application/octet-stream");
    });
    server_.Get(R"(/blobs/([0-9a-f]+))", [this](const auto& request, auto& response) {
      const HostedFile* file = nullptr;
      for (const auto& [name, candidate] : files_)
        if (candidate.is_lfs && candidate.sha256 == request.matches[1]) file = &candidate;
      if (file == nullptr) return not_found(response, "EntryNotFound");
      response.set_header("ETag", "\"" + file->sha256 + "\"");
      if (stall_next_blob.exchange(false)) {
        // Send half of the file, then hold the connection until released (the client is killed meanwhile).
        auto bytes = std::make_shared<std::string>(file->bytes);
        response.set_content_provider(bytes->size(), "application/octet-stream",
                                      [this, bytes](size_t offset, size_t, httplib::DataSink& sink) {
                                        size_t half = bytes->size() / 2;
                                        if (offset < half) return sink.write(bytes->data() + offset, half - offset);
                                        while (!release_stall) std::this_thread::sleep_for(std::chrono::milliseconds(10));
                                        return false;
                                      });
        return;
      }
      if (drop_next_blob.exchange(false)) {
        // Announce the whole file, send half of it, then close the connection.
        auto bytes = std::make_shared<std::string>(file->bytes);
        response.set_content_provider(bytes->size(), "application/octet-stream",
                                      [bytes](size_t offset, size_t, httplib::DataSink& sink) {
                                        size_t half = bytes->size() / 2;
                                        if (offset >= half) return false;
                                        sink.write(bytes->data() + offset, half - offset);
                                        return true;
                                      });
        return;
      }
      std::string bytes = file->bytes;
      if (corrupt_blobs > 0) {
        --corrupt_blobs;
        bytes[bytes.size() / 3] ^= 0x5a;
      }
      response.set_content(bytes, "application/octet-stream");  // httplib answers Range requests with 206
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("FakeHub cannot bind a loopback port");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  ~FakeHub() {
    release_stall = true;
    server_.stop();
    thread_.join();
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const HostedFile& file(const std::string& name) const { return files_.at(name); }

  std::vector<RecordedRequest> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  std::vector<RecordedRequest> requests_starting_with(const std::string& prefix) const {
    std::vector<RecordedRequest> matching;
    for (const auto& request : requests())
      if (request.path.starts_with(prefix)) matching.push_back(request);
    return matching;
  }

  // Switches.
  std::atomic<bool> drop_next_blob{false};
  std::atomic<bool> stall_next_blob{false}, release_stall{false};
  // Set before the first request: rewrites the listing (the parsed JSON the hub would send) into the body sent.
  std::function<std::string(nlohmann::json&)> edit_listing;
  std::atomic<int> corrupt_blobs{0};  // serve this many blob answers with one byte flipped
  std::string required_token;         // non-empty: anything without "Bearer <token>" gets 401

 private:
  bool authorized(const httplib::Request& request, httplib::Response& response) const {
    if (required_token.empty() || request.get_header_value("Authorization") == "Bearer " + required_token)
      return true;
    response.status = 401;
    response.set_content("Access to this model is restricted.", "text/plain");
    return false;
  }
  bool known(const std::string& repo, const std::string& revision, httplib::Response& response) const {
    if (repo != kRepo) return not_found(response, "RepoNotFound"), false;
    if (revision != "main" && revision != kCommit) return not_found(response, "RevisionNotFound"), false;
    return true;
  }
  static void not_found(httplib::Response& response, const char* code) {
    response.status = 404;
    response.set_header("X-Error-Code", code);
    response.set_content(code, "text/plain");
  }

  std::map<std::string, HostedFile> files_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<RecordedRequest> requests_;
};

// A fresh cache and home per test, and an environment without the developer's own hub settings.
class HubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    alarm(120);  // a hung transfer kills the test binary instead of blocking CI
    char pattern[] = "/tmp/fastvlm-hub-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    root_ = pattern;
    for (const char* name : {"HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"})
      unsetenv(name);
    setenv("HF_HUB_CACHE", cache().c_str(), 1);
    setenv("HF_HOME", (root_ / "home").c_str(), 1);
    setenv("HF_ENDPOINT", hub_.endpoint().c_str(), 1);
    setenv("NO_PROXY", "127.0.0.1", 1);  // a developer's proxy must not see (or break) loopback traffic
    setenv("no_proxy", "127.0.0.1", 1);
  }
  void TearDown() override {
    fs::remove_all(root_);
    alarm(0);
  }

  fs::path cache() const { return root_ / "hub"; }
  fs::path repo_dir() const { return cache() / kRepoFolder; }
  fs::path snapshot_dir(const std::string& commit = kCommit) const { return repo_dir() / "snapshots" / commit; }
  fs::path blob(const std::string& name) const { return repo_dir() / "blobs" / hub_.file(name).blob_id(); }

  static fs::path download(const std::string& model = kRepo, bool check_for_updates = false) {
    hub::DownloadOptions options;
    options.quiet = true;
    options.check_for_updates = check_for_updates;
    return hub::resolve_model(model, options);
  }

  // The message of the fastvlm::Error that resolving `model` throws ("" if it succeeds).
  static std::string download_error(const std::string& model = kRepo) {
    try {
      download(model);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  void expect_snapshot_matches_fixture(const fs::path& snapshot) const {
    for (const auto& name : kEngineFiles) {
      SCOPED_TRACE(name);
      ASSERT_TRUE(fs::is_symlink(snapshot / name));
      EXPECT_EQ(fs::read_symlink(snapshot / name), fs::path("../../blobs") / hub_.file(name).blob_id());
      // Not EXPECT_EQ: gtest would try to diff 40 MB of bytes on a mismatch.
      EXPECT_TRUE(read_bytes(snapshot / name) == read_bytes(kFixtureDir / name)) << "content differs from the fixture";
    }
  }

  std::vector<fs::path> incomplete_files() const {
    std::vector<fs::path> found;
    for (const auto& entry : fs::directory_iterator(repo_dir() / "blobs"))
      if (entry.path().extension() == ".incomplete") found.push_back(entry.path());
    return found;
  }

  FakeHub hub_;
  fs::path root_;
};

TEST(ParseModelRef, AcceptsHubIdsWithOptionalRevision) {
  auto plain = hub::parse_model_ref("apple/FastVLM-0.5B");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->repo_id, "apple/FastVLM-0.5B");
  EXPECT_EQ(plain->revision, "main");
  auto pinned = hub::parse_model_ref("apple/FastVLM-7B@" + std::string(kCommit));
  ASSERT_TRUE(pinned);
  EXPECT_EQ(pinned->repo_id, "apple/FastVLM-7B");
  EXPECT_EQ(pinned->revision, kCommit);
  auto pr = hub::parse_model_ref("KamilaMila/FastVLM-0.5B@refs/pr/1");
  ASSERT_TRUE(pr);
  EXPECT_EQ(pr->revision, "refs/pr/1");
}

TEST(ParseModelRef, RejectsPathsAndMalformedIds) {
  for (const char* text : {"", "FastVLM-0.5B", "apple/FastVLM/0.5B", "/models/fastvlm", "./fastvlm", "../a/b",
                           "apple/", "/FastVLM", "apple/FastVLM-0.5B@", "apple/FastVLM-0.5B@../../etc",
                           "ap--ple/FastVLM", "apple/Fast VLM", "apple/.hidden"})
    EXPECT_FALSE(hub::parse_model_ref(text)) << text;
}

TEST_F(HubTest, CacheDirFollowsHuggingfaceHubPrecedence) {
  EXPECT_EQ(hub::hub_cache_dir(), cache());
  unsetenv("HF_HUB_CACHE");
  EXPECT_EQ(hub::hub_cache_dir(), root_ / "home" / "hub");
  unsetenv("HF_HOME");
  std::string home = std::getenv("HOME") ? std::getenv("HOME") : "";
  setenv("HOME", root_.c_str(), 1);
  EXPECT_EQ(hub::hub_cache_dir(), root_ / ".cache" / "huggingface" / "hub");
  setenv("XDG_CACHE_HOME", (root_ / "xdg").c_str(), 1);
  EXPECT_EQ(hub::hub_cache_dir(), root_ / "xdg" / "huggingface" / "hub");
  setenv("HOME", home.c_str(), 1);
}

TEST_F(HubTest, FreshDownloadBuildsHuggingfaceHubCacheThatLoads) {
  fs::path snapshot = hub::resolve_model(kRepo);  // not quiet: exercises the plain progress lines
  EXPECT_EQ(snapshot, snapshot_dir());
  expect_snapshot_matches_fixture(snapshot);
  EXPECT_FALSE(fs::exists(snapshot / "README.md")) << "only the files the engine needs are fetched";
  EXPECT_EQ(read_bytes(repo_dir() / "refs" / "main"), kCommit);
  EXPECT_TRUE(incomplete_files().empty());

  // One listing that asked for blob ids, one resolve per file, one redirected blob (the LFS weights).
  auto api = hub_.requests_starting_with("/api/");
  ASSERT_EQ(api.size(), 1u);
  EXPECT_EQ(hub_.requests_starting_with("/" + std::string(kRepo) + "/resolve/" + kCommit + "/").size(),
            kEngineFiles.size());
  EXPECT_EQ(hub_.requests_starting_with("/blobs/").size(), 1u);

  auto checkpoint = Checkpoint::open(snapshot);
  EXPECT_TRUE(checkpoint->has("lm_head.weight"));
}

TEST_F(HubTest, CompleteCacheIsUsedWithoutAnyRequest) {
  download();
  size_t after_download = hub_.requests().size();
  EXPECT_EQ(download(), snapshot_dir());
  EXPECT_EQ(hub_.requests().size(), after_download);
}

TEST_F(HubTest, PullAsksForTheCommitButDownloadsNothingNew) {
  download();
  size_t after_download = hub_.requests().size();
  EXPECT_EQ(download(kRepo, /*check_for_updates=*/true), snapshot_dir());
  auto requests = hub_.requests();
  ASSERT_EQ(requests.size(), after_download + 1);
  EXPECT_TRUE(requests.back().path.starts_with("/api/models/"));
}

TEST_F(HubTest, ResumesAfterTheConnectionDrops) {
  hub_.drop_next_blob = true;
  expect_snapshot_matches_fixture(download());
  auto blob_requests = hub_.requests_starting_with("/blobs/");
  ASSERT_EQ(blob_requests.size(), 2u);
  EXPECT_EQ(blob_requests[0].range, "");
  size_t half = hub_.file("model.safetensors").bytes.size() / 2;
  EXPECT_EQ(blob_requests[1].range, "bytes=" + std::to_string(half) + "-");
  EXPECT_TRUE(incomplete_files().empty());
}

TEST_F(HubTest, ResumesAnIncompleteFileLeftByAnEarlierRun) {
  const std::string& weights = hub_.file("model.safetensors").bytes;
  fs::path part = blob("model.safetensors");
  part += ".incomplete";
  write_bytes(part, weights.substr(0, 1000000));
  expect_snapshot_matches_fixture(download());
  auto blob_requests = hub_.requests_starting_with("/blobs/");
  ASSERT_EQ(blob_requests.size(), 1u);
  EXPECT_EQ(blob_requests[0].range, "bytes=1000000-");
}

TEST_F(HubTest, WriteFailureIsReportedAndTheNextRunResumes) {
  // A file size limit makes writes fail part-way, as a full disk would (EFBIG instead of ENOSPC).
  constexpr rlim_t kLimit = 10'000'000;
  rlimit original{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &original), 0);
  auto previous_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit limited = original;
  limited.rlim_cur = kLimit;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limited), 0);
  std::string message = download_error();
  setrlimit(RLIMIT_FSIZE, &original);
  std::signal(SIGXFSZ, previous_handler);

  EXPECT_NE(message.find("cannot write"), std::string::npos) << message;
  EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(blob("model.safetensors")));
  ASSERT_EQ(incomplete_files().size(), 1u);

  expect_snapshot_matches_fixture(download());
  auto blob_requests = hub_.requests_starting_with("/blobs/");
  ASSERT_EQ(blob_requests.size(), 2u);
  EXPECT_EQ(blob_requests[1].range, "bytes=" + std::to_string(kLimit) + "-");
}

TEST_F(HubTest, CorruptedFileIsRejectedAndFetchedAgain) {
  hub_.corrupt_blobs = 1;
  expect_snapshot_matches_fixture(download());
  auto blob_requests = hub_.requests_starting_with("/blobs/");
  ASSERT_EQ(blob_requests.size(), 2u);
  EXPECT_EQ(blob_requests[1].range, "") << "a corrupt file is fetched again from the start";
}

TEST_F(HubTest, PersistentCorruptionFailsAndKeepsNothing) {
  hub_.corrupt_blobs = 100;
  std::string message = download_error();
  EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find("sha256"), std::string::npos) << message;
  EXPECT_EQ(hub_.requests_starting_with("/blobs/").size(), 2u);
  EXPECT_FALSE(fs::exists(blob("model.safetensors")));
  EXPECT_TRUE(incomplete_files().empty());
  EXPECT_FALSE(fs::exists(snapshot_dir() / "model.safetensors"));
}

// A client killed mid-transfer (no destructor, no cleanup) leaves blobs/<id>.incomplete; the next run
// resumes from its length and checks the whole file's hash.
TEST_F(HubTest, KilledMidDownloadResumesAndVerifies) {
  hub_.stall_next_blob = true;
  const size_t half = hub_.file("model.safetensors").bytes.size() / 2;
  fs::path part = blob("model.safetensors");
  part += ".incomplete";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      download();
    } catch (...) {
    }
    _exit(0);
  }
  // The child's stdio buffer may hold the last few kB when it is killed: those are lost, as in real life.
  std::error_code ec;
  for (int waited = 0; fs::file_size(part, ec) + 65536 < half || ec; ++waited) {
    ASSERT_LT(waited, 6000) << "the child never wrote half of the file";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));
  hub_.release_stall = true;
  EXPECT_FALSE(fs::exists(blob("model.safetensors")));
  const auto kept = fs::file_size(part);

  expect_snapshot_matches_fixture(download());
  auto blob_requests = hub_.requests_starting_with("/blobs/");
  ASSERT_EQ(blob_requests.size(), 2u);
  EXPECT_EQ(blob_requests[1].range, "bytes=" + std::to_string(kept) + "-");
  EXPECT_TRUE(incomplete_files().empty());
}

// Bit rot or a truncated copy in blobs/ is found when the hub is next asked (`fastvlm pull`), and fetched again.
TEST_F(HubTest, CorruptedBlobInTheCacheIsDetectedAndFetchedAgain) {
  download();
  std::string weights = read_bytes(blob("model.safetensors"));
  weights[weights.size() / 2] ^= 0x01;
  write_bytes(blob("model.safetensors"), weights);
  const std::string config = read_bytes(blob("config.json"));
  write_bytes(blob("config.json"), config.substr(0, config.size() / 2));
  const size_t before = hub_.requests().size();

  expect_snapshot_matches_fixture(download(kRepo, /*check_for_updates=*/true));
  auto requests = hub_.requests();
  ASSERT_GT(requests.size(), before);
  std::vector<std::string> fetched;
  for (size_t i = before; i < requests.size(); ++i)
    if (!requests[i].path.starts_with("/api/")) fetched.push_back(requests[i].path);
  EXPECT_EQ(fetched.size(), 3u) << "config.json, and model.safetensors' resolve + blob";
}

// huggingface_hub never lists a negative size; -1 once became 2^64 - 1, overflowed the disk-space check
// and failed only after downloading the file twice.
TEST_F(HubTest, ImpossibleListedSizeIsRefusedBeforeDownloading) {
  for (const int64_t size : {int64_t(-1), int64_t(1) << 50}) {
    SCOPED_TRACE(size);
    hub_.edit_listing = [size](nlohmann::json& info) {
      for (auto& sibling : info["siblings"])
        if (sibling["rfilename"] == "model.safetensors") sibling["lfs"]["size"] = size;
      return info.dump();
    };
    std::string message = download_error();
    EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
    EXPECT_NE(message.find("size"), std::string::npos) << message;
    EXPECT_TRUE(hub_.requests_starting_with("/blobs/").empty());
    EXPECT_TRUE(hub_.requests_starting_with("/" + std::string(kRepo) + "/resolve/").empty());
  }
}

// A listing is held and parsed in memory (about ten times its size as a tree): a huge one is refused
// while it arrives.
TEST_F(HubTest, HugeListingIsRefused) {
  hub_.edit_listing = [](nlohmann::json& info) {
    info["cardData"] = std::string(9 << 20, 'x');  // 9 MB, over the 8 MB limit
    return info.dump();
  };
  std::string message = download_error();
  EXPECT_NE(message.find("listing"), std::string::npos) << message;
  EXPECT_NE(message.find("larger than"), std::string::npos) << message;
}

// "." would make refs/. the file to write (a directory): the rename failed and left refs/..tmp<pid>.
TEST_F(HubTest, DotRevisionsAreRefused) {
  for (const char* revision : {".", "..", "refs/.", "main/.", ".hidden", "a/.b"}) {
    EXPECT_FALSE(hub::parse_model_ref(std::string(kRepo) + "@" + revision)) << revision;
    EXPECT_NE(download_error(std::string(kRepo) + "@" + revision).find("neither a directory"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(repo_dir() / "refs"));
}

TEST_F(HubTest, GatedModelAsksForATokenAndUsesHfToken) {
  hub_.required_token = "hf_test_secret";
  std::string message = download_error();
  EXPECT_NE(message.find("401"), std::string::npos) << message;
  EXPECT_NE(message.find("HF_TOKEN"), std::string::npos) << message;
  EXPECT_NE(message.find("gated or private"), std::string::npos) << message;

  setenv("HF_TOKEN", "hf_test_secret", 1);
  expect_snapshot_matches_fixture(download());
  for (const auto& request : hub_.requests_starting_with("/" + std::string(kRepo)))
    EXPECT_EQ(request.authorization, "Bearer hf_test_secret") << request.path;
}

TEST_F(HubTest, TokenIsReadFromTheHuggingfaceTokenFile) {
  hub_.required_token = "hf_from_file";
  write_bytes(root_ / "home" / "token", "hf_from_file\n");
  expect_snapshot_matches_fixture(download());
}

TEST_F(HubTest, UnknownModelRevisionAndServerAreReportedClearly) {
  std::string model = download_error("apple/FastVLM-99B");
  EXPECT_NE(model.find("no such model"), std::string::npos) << model;
  EXPECT_NE(model.find("404"), std::string::npos) << model;
  std::string revision = download_error(std::string(kRepo) + "@no-such-branch");
  EXPECT_NE(revision.find("no such revision"), std::string::npos) << revision;

  setenv("HF_ENDPOINT", "http://127.0.0.1:1", 1);  // nothing listens on port 1
  std::string unreachable = download_error();
  EXPECT_NE(unreachable.find("cannot reach http://127.0.0.1:1"), std::string::npos) << unreachable;
}

TEST_F(HubTest, OfflineModeUsesAWarmCacheWithoutRequests) {
  download();
  size_t after_download = hub_.requests().size();
  setenv("HF_HUB_OFFLINE", "1", 1);
  EXPECT_EQ(download(kRepo, /*check_for_updates=*/true), snapshot_dir());
  EXPECT_EQ(hub_.requests().size(), after_download);
}

TEST_F(HubTest, OfflineModeWithAColdCacheFailsClearly) {
  setenv("HF_HUB_OFFLINE", "1", 1);
  std::string message = download_error();
  EXPECT_NE(message.find("HF_HUB_OFFLINE"), std::string::npos) << message;
  EXPECT_NE(message.find(kRepo), std::string::npos) << message;
  EXPECT_TRUE(hub_.requests().empty());
}

TEST_F(HubTest, ReusesACacheWrittenByHuggingfaceHub) {
  // The layout huggingface_hub writes, built by hand for a commit FakeHub does not even know.
  const std::string python_commit = "0123456789abcdef0123456789abcdef01234567";
  for (const auto& name : kEngineFiles) {
    write_bytes(blob(name), read_bytes(kFixtureDir / name));
    fs::create_directories(snapshot_dir(python_commit));
    fs::create_symlink(fs::path("../../blobs") / hub_.file(name).blob_id(), snapshot_dir(python_commit) / name);
  }
  write_bytes(repo_dir() / "refs" / "main", python_commit);
  EXPECT_EQ(download(), snapshot_dir(python_commit));
  EXPECT_TRUE(hub_.requests().empty());
}

TEST_F(HubTest, LocalDirectoryIsUsedAsIs) {
  EXPECT_EQ(download(kFixtureDir.string()), kFixtureDir);
  EXPECT_TRUE(hub_.requests().empty());
}

TEST_F(HubTest, ListShowsCachedModelsWithSizesAndRevisions) {
  EXPECT_TRUE(hub::list_cached_models().empty());
  download();
  auto models = hub::list_cached_models();
  ASSERT_EQ(models.size(), 1u);
  EXPECT_EQ(models[0].repo_id, kRepo);
  std::uintmax_t fixture_bytes = 0;
  for (const auto& name : kEngineFiles) fixture_bytes += fs::file_size(kFixtureDir / name);
  EXPECT_EQ(models[0].blob_bytes, fixture_bytes);
  ASSERT_EQ(models[0].revisions.size(), 1u);
  EXPECT_EQ(models[0].revisions[0].revision, "main");
  EXPECT_EQ(models[0].revisions[0].commit, kCommit);
  EXPECT_TRUE(models[0].revisions[0].complete);
}

}  // namespace

// The README's quick start: `fastvlm run` with no -m pulls the default model on first use, then runs
// from the cache (offline too), answering exactly as from the fixture directory.
TEST_F(HubTest, CliWithoutModelDownloadsTheDefaultAndAnswers) {
  const fs::path image = kFixtureDir / "golden" / "image_a_320x200.png";
  auto run_cli = [&](const std::string& env) {
    std::string command = env + " '" FASTVLM_BIN_DIR "/fastvlm' run -q --image '" + image.string() +
                          "' -p 'Describe the image.' -n 4 --temp 0 --json --dtype f32 2>&1";
    const auto [out, exit_code] = fastvlm::test_support::run_command(command);
    EXPECT_EQ(exit_code, 0) << out;
    return out;
  };
  const std::string first = run_cli("");
  EXPECT_FALSE(hub_.requests_starting_with("/api/models/" + std::string(kRepo)).empty());
  const auto golden = nlohmann::json::parse(std::ifstream(kFixtureDir / "golden" / "golden.json"));
  auto expected = golden["images"]["image_a_320x200"]["greedy_tokens"].get<std::vector<int>>();
  expected.resize(4);
  EXPECT_EQ(nlohmann::json::parse(first)["token_ids"].get<std::vector<int>>(), expected) << first;
  const size_t requests = hub_.requests_starting_with("/").size();
  const std::string offline = run_cli("HF_HUB_OFFLINE=1");
  EXPECT_EQ(nlohmann::json::parse(offline)["token_ids"], nlohmann::json::parse(first)["token_ids"]);
  EXPECT_EQ(hub_.requests_starting_with("/").size(), requests);

  // `fastvlm list` names the cached model's family, read from its config.json by the model registry.
  const auto [listed, list_exit_code] = fastvlm::test_support::run_command("'" FASTVLM_BIN_DIR "/fastvlm' list 2>&1");
  EXPECT_EQ(list_exit_code, 0) << listed;
  EXPECT_NE(listed.find("FAMILY"), std::string::npos) << listed;
  EXPECT_NE(listed.find(" fastvlm "), std::string::npos) << listed;
}
