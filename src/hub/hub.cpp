#include "hub/hub.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_file.h"

namespace fastvlm::hub {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kDefaultEndpoint = "https://huggingface.co";
// A dropped connection or a 5xx is retried (resuming from what arrived) this many times in all.
constexpr int kMaxTransferAttempts = 5;
// The repository listing is held in memory and parsed into a tree about ten times its size. A listing
// with blob ids takes about 250 bytes a file: 8 MB is some 30,000 files, far more than any model has.
constexpr size_t kMaxListingBytes = size_t(8) << 20;
// The hub refuses files over 50 GB; a listed size beyond this is corrupt, and must not overflow the sum
// of sizes checked against the free disk space.
constexpr std::uint64_t kMaxFileBytes = std::uint64_t(1) << 40;

// ---------------------------------------------------------------------------------------------------
// Environment, following huggingface_hub's variable names and precedence.

std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

fs::path expand_home(const std::string& path) {
  if (path.empty() || path[0] != '~') return path;
  auto home = env("HOME");
  if (!home) throw Error("cannot expand '" + path + "': HOME is not set");
  return fs::path(*home) / path.substr(path.size() > 1 && path[1] == '/' ? 2 : 1);
}

bool env_flag(const char* name) {
  auto value = env(name);
  if (!value) return false;
  std::string lower = *value;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  return lower == "1" || lower == "true" || lower == "yes" || lower == "on";
}

fs::path hf_home() {
  if (auto home = env("HF_HOME")) return expand_home(*home);
  if (auto xdg = env("XDG_CACHE_HOME")) return expand_home(*xdg) / "huggingface";
  return expand_home("~/.cache/huggingface");
}

bool offline_mode() { return env_flag("HF_HUB_OFFLINE"); }

std::string endpoint() {
  std::string url = env("HF_ENDPOINT").value_or(std::string(kDefaultEndpoint));
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

std::string trim(std::string text) {
  const char* space = " \t\r\n";
  text.erase(0, text.find_first_not_of(space));
  text.erase(text.find_last_not_of(space) + 1);
  return text;
}

std::optional<std::string> read_small_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

// HF_TOKEN, else the file `huggingface-cli login` writes.
std::optional<std::string> access_token() {
  if (auto token = env("HF_TOKEN")) return trim(*token);
  fs::path token_file = env("HF_TOKEN_PATH") ? expand_home(*env("HF_TOKEN_PATH")) : hf_home() / "token";
  if (auto content = read_small_file(token_file)) {
    std::string token = trim(*content);
    if (!token.empty()) return token;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------------
// Names.

bool is_hex(std::string_view text, size_t length) {
  return text.size() == length &&
         std::all_of(text.begin(), text.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

bool is_commit_hash(std::string_view text) { return is_hex(text, 40); }

// The hub allows letters, digits, '-', '_', '.' in owner and repository names, without "--" or ".."
// and not starting or ending with '-' or '.'.
bool is_valid_name_part(std::string_view part) {
  if (part.empty() || part.size() > 96) return false;
  bool allowed = std::all_of(part.begin(), part.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
  return allowed && part.find("--") == std::string_view::npos && part.find("..") == std::string_view::npos &&
         part.front() != '-' && part.front() != '.' && part.back() != '-' && part.back() != '.';
}

// Branch and tag names end up as paths under refs/, so nothing that could climb out of it or name a
// directory ("." would make refs/. the file to write). Git forbids components starting with '.' too.
bool is_valid_revision(std::string_view revision) {
  if (revision.empty() || revision.size() > 200 || revision.front() == '/' || revision.back() == '/') return false;
  bool allowed = std::all_of(revision.begin(), revision.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '/';
  });
  return allowed && revision.front() != '.' && revision.find("/.") == std::string_view::npos &&
         revision.find("..") == std::string_view::npos && revision.find("//") == std::string_view::npos;
}

std::string repo_folder_name(const std::string& repo_id) {
  std::string folder = "models--" + repo_id;
  folder.replace(folder.find('/'), 1, "--");
  return folder;
}

std::string url_escape(const std::string& text) {
  std::unique_ptr<char, decltype(&curl_free)> escaped(curl_easy_escape(nullptr, text.c_str(), int(text.size())),
                                                      curl_free);
  if (!escaped) throw Error("cannot URL-encode '" + text + "'");
  return escaped.get();
}

}  // namespace

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1000.0 && unit < 4) {
    bytes /= 1000.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, units[unit]);
  return text;
}

namespace {

// The files the engine reads; everything else in a repository (READMEs, PyTorch .bin duplicates,
// ONNX exports, sub-folders) is left on the hub.
bool engine_needs(const std::string& filename) {
  static const std::set<std::string, std::less<>> kNamed = {
      "config.json",     "generation_config.json", "model.safetensors.index.json",
      "tokenizer.json",  "tokenizer_config.json",  "vocab.json",
      "merges.txt",      "added_tokens.json",      "special_tokens_map.json",
      "preprocessor_config.json"};  // the fast_vlm layout's input size
  if (filename.find('/') != std::string::npos) return false;
  return kNamed.count(filename) > 0 || (filename.size() > 12 && filename.ends_with(".safetensors"));
}

// What a snapshot lacks before the engine can load it (empty = complete). Symlinks are followed, so a
// link whose blob was deleted counts as missing.
std::vector<std::string> missing_engine_files(const fs::path& snapshot) {
  std::vector<std::string> missing;
  if (!fs::exists(snapshot / "config.json")) missing.push_back("config.json");
  fs::path index_path = snapshot / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    std::set<std::string> shards;
    try {
      auto index = read_json_file(index_path);
      for (const auto& [tensor, shard] : index.at("weight_map").items()) shards.insert(shard.get<std::string>());
    } catch (const std::exception&) {  // fastvlm::Error (unreadable, too large or deep) or a wrong structure
      missing.push_back("a readable model.safetensors.index.json");
    }
    for (const auto& shard : shards)
      if (shard.find('/') != std::string::npos || !fs::exists(snapshot / shard)) missing.push_back(shard);
  } else if (!fs::exists(snapshot / "model.safetensors")) {
    missing.push_back("model.safetensors");
  }
  bool has_tokenizer = fs::exists(snapshot / "tokenizer.json") ||
                       (fs::exists(snapshot / "vocab.json") && fs::exists(snapshot / "merges.txt"));
  if (!has_tokenizer) missing.push_back("tokenizer.json (or vocab.json + merges.txt)");
  return missing;
}

std::string join(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "" : ", ") + item;
  return text;
}

std::optional<std::string> read_ref(const fs::path& repo_dir, const std::string& revision) {
  if (is_commit_hash(revision)) return revision;
  auto content = read_small_file(repo_dir / "refs" / revision);
  if (!content) return std::nullopt;
  std::string commit = trim(*content);
  return commit.empty() ? std::nullopt : std::optional(commit);
}

// ---------------------------------------------------------------------------------------------------
// Content hashes: sha256 for LFS files, git's blob sha1 ("blob <size>\0" + content) for the others, so
// every file, not only the weights, is checked against the id the hub lists.

class ContentHasher {
 public:
  ContentHasher(bool is_lfs, std::uint64_t size) : is_lfs_(is_lfs), size_(size) { reset(); }

  void reset() {
    if (!context_ || EVP_DigestInit_ex(context_.get(), is_lfs_ ? EVP_sha256() : EVP_sha1(), nullptr) != 1)
      throw Error("cannot initialise the OpenSSL digest");
    if (!is_lfs_) {
      std::string header = "blob " + std::to_string(size_) + '\0';
      update(header.data(), header.size());
    }
  }
  void update(const void* data, size_t size) { EVP_DigestUpdate(context_.get(), data, size); }
  std::string hex_digest() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(context_.get(), digest, &length);
    std::string hex;
    char byte[3];
    for (unsigned int i = 0; i < length; ++i) {
      std::snprintf(byte, sizeof byte, "%02x", digest[i]);
      hex += byte;
    }
    return hex;
  }
  const char* name() const { return is_lfs_ ? "sha256" : "git blob sha1"; }

 private:
  bool is_lfs_;
  std::uint64_t size_;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context_{EVP_MD_CTX_new(), EVP_MD_CTX_free};
};

// ---------------------------------------------------------------------------------------------------
// HTTP with libcurl.

struct Response {
  CURLcode curl_code = CURLE_OK;
  std::string curl_message;
  long status = 0;
  std::string error_code;  // X-Error-Code: the hub's reason for a 4xx (RepoNotFound, GatedRepo, ...)
  std::string body;        // text answers, and the start of error pages
};

// Receives the body of a 2xx answer; `status` tells 200 from 206. Returns false to abort the transfer.
using BodySink = std::function<bool(const char* data, size_t size, long status)>;

struct Transfer {
  Response response;
  const BodySink* sink;
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto& response = static_cast<Transfer*>(user)->response;
  std::string_view line(data, size * count);
  if (line.starts_with("HTTP/")) {  // a new answer (after a redirect): forget the previous one's headers
    response.error_code.clear();
    auto space = line.find(' ');
    if (space != std::string_view::npos) response.status = std::strtol(line.data() + space + 1, nullptr, 10);
    return line.size();
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return line.size();
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  if (name == "x-error-code") response.error_code = trim(std::string(line.substr(colon + 1)));
  return line.size();
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto& transfer = *static_cast<Transfer*>(user);
  size_t bytes = size * count;
  long status = transfer.response.status;
  if (status >= 200 && status < 300) return (*transfer.sink)(data, bytes, status) ? bytes : 0;
  constexpr size_t kErrorBodyLimit = 2048;
  auto& body = transfer.response.body;
  body.append(data, std::min(bytes, kErrorBodyLimit - std::min(body.size(), kErrorBodyLimit)));
  return bytes;
}

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw Error("cannot initialise libcurl");
  });
}

// GET `url`, following redirects (the hub sends LFS files to a CDN). The token goes in an Authorization
// header, which libcurl does not forward when a redirect leaves the host.
Response http_get(const std::string& url, const std::optional<std::string>& token, std::uint64_t range_start,
                  const BodySink& sink) {
  init_curl_once();
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) throw Error("cannot create a libcurl handle");
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr, curl_slist_free_all);
  if (token) headers.reset(curl_slist_append(nullptr, ("Authorization: Bearer " + *token).c_str()));
  std::string range = std::to_string(range_start) + "-";
  char error_text[CURL_ERROR_SIZE] = "";
  Transfer transfer{{}, &sink};

  CURL* handle = curl.get();
  curl_easy_setopt(handle, CURLOPT_URL, url.c_str());
  curl_easy_setopt(handle, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(handle, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(handle, CURLOPT_USERAGENT, "fastvlm/0.1.0");
  curl_easy_setopt(handle, CURLOPT_HTTPHEADER, headers.get());
  if (range_start > 0) curl_easy_setopt(handle, CURLOPT_RANGE, range.c_str());
  curl_easy_setopt(handle, CURLOPT_CONNECTTIMEOUT, 20L);
  // A stalled connection (under 1 kB/s for a minute) counts as dropped and is resumed.
  curl_easy_setopt(handle, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(handle, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, error_text);
  curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(handle, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(handle, CURLOPT_WRITEDATA, &transfer);

  transfer.response.curl_code = curl_easy_perform(handle);
  if (transfer.response.curl_code != CURLE_OK)
    transfer.response.curl_message = *error_text ? error_text : curl_easy_strerror(transfer.response.curl_code);
  curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &transfer.response.status);
  return std::move(transfer.response);
}

bool is_unreachable(CURLcode code) {
  return code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_RESOLVE_PROXY ||
         code == CURLE_COULDNT_CONNECT || code == CURLE_SSL_CONNECT_ERROR;
}

bool is_interrupted(CURLcode code) {
  return code == CURLE_PARTIAL_FILE || code == CURLE_RECV_ERROR || code == CURLE_SEND_ERROR ||
         code == CURLE_OPERATION_TIMEDOUT || code == CURLE_GOT_NOTHING || code == CURLE_HTTP2 ||
         code == CURLE_HTTP2_STREAM;
}

[[noreturn]] void throw_unreachable(const Response& response) {
  throw Error("cannot reach " + endpoint() + ": " + response.curl_message +
              " (check the network or HF_ENDPOINT; with HF_HUB_OFFLINE=1 only the cache is used)");
}

// Turns an HTTP error into a message that says what the user can do. `what` names the request.
[[noreturn]] void throw_http_error(const Response& response, const std::string& what, const std::string& url,
                                   bool sent_token) {
  std::string status = "HTTP " + std::to_string(response.status);
  if (response.status == 401 || response.status == 403) {
    if (response.error_code == "RepoNotFound")
      throw Error(what + ": no such model (" + status + "; a private model also answers this way: set HF_TOKEN)");
    throw Error(what + ": access denied (" + status + "): the model is gated or private: " +
                (sent_token ? "the token in use has no access; accept the model's terms on the hub with that account"
                            : "set HF_TOKEN (or log in with `huggingface-cli login`) after accepting its terms"));
  }
  if (response.status == 404) {
    if (response.error_code == "RevisionNotFound") throw Error(what + ": no such revision (" + status + ")");
    if (response.error_code == "EntryNotFound") throw Error(what + ": no such file (" + status + ")");
    throw Error(what + ": no such model/revision/file (" + status + " for " + url + ")");
  }
  throw Error(what + ": " + endpoint() + " answered " + status + " for " + url);
}

// ---------------------------------------------------------------------------------------------------
// Progress: a redrawn bar on a terminal, one line per file otherwise, nothing when quiet.

class Progress {
 public:
  Progress(std::string label, std::uint64_t total, std::uint64_t already, bool quiet)
      : label_(std::move(label)), total_(total), already_(already), start_(Clock::now()),
        mode_(quiet ? Mode::Quiet : isatty(fileno(stderr)) ? Mode::Bar : Mode::Lines) {
    if (mode_ == Mode::Lines)
      std::fprintf(stderr, "fastvlm: downloading %s (%s%s)\n", label_.c_str(), format_bytes(double(total_)).c_str(),
                   already_ > 0 ? (", resuming at " + format_bytes(double(already_))).c_str() : "");
  }

  void update(std::uint64_t done) {
    if (mode_ != Mode::Bar) return;
    auto now = Clock::now();
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    double seconds = std::chrono::duration<double>(now - start_).count();
    double rate = seconds > 0 ? double(done - std::min(done, already_)) / seconds : 0.0;
    constexpr int kWidth = 24;
    int filled = total_ > 0 ? int(kWidth * double(std::min(done, total_)) / double(total_)) : kWidth;
    std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
    std::string eta = "--:--";
    if (rate > 0) {
      auto left = static_cast<long>(double(total_ - std::min(done, total_)) / rate);
      char text[32];
      std::snprintf(text, sizeof text, "%ld:%02ld", left / 60, left % 60);
      eta = text;
    }
    std::fprintf(stderr, "\r%-28.28s [%s] %3d%% %9s / %-9s %9s/s ETA %s\033[K", label_.c_str(), bar.c_str(),
                 total_ > 0 ? int(100.0 * double(done) / double(total_)) : 100, format_bytes(double(done)).c_str(),
                 format_bytes(double(total_)).c_str(), format_bytes(rate).c_str(), eta.c_str());
    std::fflush(stderr);
  }

  void finish() {
    double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    if (mode_ == Mode::Bar) {
      update(total_);
      std::fputc('\n', stderr);
    } else if (mode_ == Mode::Lines) {
      std::fprintf(stderr, "fastvlm: %s done in %.1f s\n", label_.c_str(), seconds);
    }
  }

  // A failed transfer leaves the bar's line; move on so the error prints on its own line.
  void abandon() {
    if (mode_ == Mode::Bar) std::fputc('\n', stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  enum class Mode { Quiet, Bar, Lines };
  std::string label_;
  std::uint64_t total_, already_;
  Clock::time_point start_, last_draw_{};
  Mode mode_;
};

// ---------------------------------------------------------------------------------------------------
// Downloads into the cache.

struct RemoteFile {
  std::string name;
  std::string blob_id;  // sha256 (LFS) or git blob sha1
  std::uint64_t size = 0;
  bool is_lfs = false;
};

struct RepoListing {
  std::string commit;
  std::vector<RemoteFile> files;  // only the ones the engine needs
};

// An exclusive flock on .locks/<repo folder>/<blob>.lock, the lock huggingface_hub takes too, so two
// processes never write the same .incomplete file.
class BlobLock {
 public:
  explicit BlobLock(const fs::path& path) {
    fs::create_directories(path.parent_path());
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error("cannot create lock file " + path.string() + ": " + std::strerror(errno));
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno != EINTR) throw Error("cannot lock " + path.string() + ": " + std::strerror(errno));
    }
  }
  ~BlobLock() { ::close(fd_); }
  BlobLock(const BlobLock&) = delete;
  BlobLock& operator=(const BlobLock&) = delete;

 private:
  int fd_ = -1;
};

// `what` names the model file being saved, `path` the file that could not be written.
[[noreturn]] void throw_write_error(const std::string& what, const fs::path& path, int error_number,
                                    std::uint64_t still_needed) {
  std::string reason = std::strerror(error_number);
  if (error_number == ENOSPC || error_number == EDQUOT)
    throw Error(what + ": cannot write " + path.string() + ": the disk is full (" + reason + "); free " +
                format_bytes(double(still_needed)) + " and run again to resume");
  throw Error(what + ": cannot write " + path.string() + ": " + reason);
}

class HubClient {
 public:
  HubClient(ModelRef ref, bool quiet)
      : ref_(std::move(ref)), endpoint_(endpoint()), token_(access_token()), quiet_(quiet),
        repo_dir_(hub_cache_dir() / repo_folder_name(ref_.repo_id)) {}

  const fs::path& repo_dir() const { return repo_dir_; }

  RepoListing fetch_listing() const {
    // blobs=True (spelled as huggingface_hub sends it) adds each file's size, git blob id and LFS sha256.
    std::string url = endpoint_ + "/api/models/" + ref_.repo_id + "/revision/" + url_escape(ref_.revision) +
                      "?blobs=True";
    std::string body;
    bool too_large = false;
    Response response = http_get(url, token_, 0, [&](const char* data, size_t size, long) {
      too_large = size > kMaxListingBytes - body.size();
      if (!too_large) body.append(data, size);
      return !too_large;
    });
    if (too_large)
      throw Error("the listing of " + model_name() + " from " + url + " is larger than " +
                  format_bytes(double(kMaxListingBytes)) + ": not a model repository this engine can use");
    if (response.curl_code != CURLE_OK) {
      if (is_unreachable(response.curl_code)) throw_unreachable(response);
      throw Error("asking " + endpoint_ + " about " + model_name() + " failed: " + response.curl_message);
    }
    if (response.status >= 300) throw_http_error(response, model_name(), url, token_.has_value());
    return parse_listing(body, url);
  }

  // Downloads what the snapshot lacks, links it in, records the revision's commit; returns the snapshot.
  fs::path materialize(const RepoListing& listing) const {
    fs::path snapshot = repo_dir_ / "snapshots" / listing.commit;
    std::vector<const RemoteFile*> to_fetch;
    std::uint64_t bytes_to_fetch = 0;
    for (const auto& file : listing.files) {
      if (cached_intact(file, snapshot)) continue;
      to_fetch.push_back(&file);
      bytes_to_fetch += file.size - std::min<std::uint64_t>(file.size, partial_size(file));
    }
    fs::create_directories(repo_dir_ / "blobs");
    std::uint64_t available = fs::space(repo_dir_ / "blobs").available;
    if (bytes_to_fetch > available)
      throw Error("not enough disk space for " + model_name() + " in " + repo_dir_.string() + ": " +
                  format_bytes(double(bytes_to_fetch)) + " to download, " + format_bytes(double(available)) +
                  " free (set HF_HUB_CACHE to use another disk)");
    for (const RemoteFile* file : to_fetch) download(*file, listing.commit);
    for (const auto& file : listing.files) link_into_snapshot(file, snapshot);
    if (ref_.revision != listing.commit) write_ref(listing.commit);
    if (auto missing = missing_engine_files(snapshot); !missing.empty())
      throw Error(model_name() + " (commit " + listing.commit + ") lacks " + join(missing) +
                  ": not a checkpoint this engine can load");
    return snapshot;
  }

 private:
  ModelRef ref_;
  std::string endpoint_;
  std::optional<std::string> token_;
  bool quiet_;
  fs::path repo_dir_;

  std::string model_name() const { return ref_.repo_id + "@" + ref_.revision; }

  // Whether the cache holds `file` with its listed size and hash: the blob, or the snapshot's copy on a
  // filesystem without symlinks. A cached file that does not match (a disk error, a hand edit) is removed so
  // that it is fetched again. Runs whenever the hub is asked (`fastvlm pull`, an incomplete snapshot): the
  // offline fast path trusts the cache.
  bool cached_intact(const RemoteFile& file, const fs::path& snapshot) const {
    std::error_code ec;
    const fs::path path = fs::exists(blob_path(file), ec) ? blob_path(file) : snapshot / file.name;
    if (!fs::exists(path, ec)) return false;
    if (fs::file_size(path, ec) == file.size && !ec) {
      ContentHasher hasher(file.is_lfs, file.size);
      hash_existing_part(path, file.size, hasher);
      if (hasher.hex_digest() == file.blob_id) return true;
    }
    if (!quiet_) std::fprintf(stderr, "fastvlm: %s in the cache is corrupt; downloading it again\n", file.name.c_str());
    fs::remove(path, ec);
    return false;
  }
  fs::path blob_path(const RemoteFile& file) const { return repo_dir_ / "blobs" / file.blob_id; }
  fs::path partial_path(const RemoteFile& file) const { return repo_dir_ / "blobs" / (file.blob_id + ".incomplete"); }
  std::uint64_t partial_size(const RemoteFile& file) const {
    std::error_code ignored;
    auto size = fs::file_size(partial_path(file), ignored);
    return ignored ? 0 : size;
  }

  // get<uint64_t>() would turn -1 into 2^64 - 1.
  static std::uint64_t listed_size(const nlohmann::json& entry, const std::string& name, const std::string& url) {
    const nlohmann::json& size = entry.at("size");
    if (!size.is_number_unsigned())
      throw Error("unexpected answer from " + url + ": " + name + " has size " + size.dump() +
                  ", not a non-negative integer");
    return size.get<std::uint64_t>();
  }

  RepoListing parse_listing(const std::string& body, const std::string& url) const {
    RepoListing listing;
    try {
      auto info = parse_json(body, "the listing from " + url, JsonLimits{kMaxListingBytes, 64});
      listing.commit = info.at("sha").get<std::string>();
      for (const auto& sibling : info.at("siblings")) {
        RemoteFile file;
        file.name = sibling.at("rfilename").get<std::string>();
        if (!engine_needs(file.name)) continue;
        if (sibling.contains("lfs") && sibling["lfs"].is_object()) {
          file.is_lfs = true;
          file.blob_id = sibling["lfs"].at("sha256").get<std::string>();
          file.size = listed_size(sibling["lfs"], file.name, url);
        } else {
          file.blob_id = sibling.at("blobId").get<std::string>();
          file.size = listed_size(sibling, file.name, url);
        }
        if (file.size > kMaxFileBytes)
          throw Error("the hub lists " + file.name + " with an impossible size of " + std::to_string(file.size) +
                      " bytes");
        // The ids become file names in blobs/: accept only what a hash looks like.
        if (!is_hex(file.blob_id, file.is_lfs ? 64 : 40))
          throw Error("the hub lists " + file.name + " with a malformed blob id '" + file.blob_id + "'");
        listing.files.push_back(std::move(file));
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error("unexpected answer from " + url + " (is HF_ENDPOINT a Hugging Face hub?): " + e.what());
    }
    if (!is_commit_hash(listing.commit))
      throw Error("unexpected answer from " + url + ": commit '" + listing.commit + "' is not a 40-hex hash");
    return listing;
  }

  // Streams one file into blobs/<id>.incomplete (resuming what is there), checks its size and hash,
  // and only then renames it to blobs/<id>.
  void download(const RemoteFile& file, const std::string& commit) const {
    BlobLock lock(repo_dir_.parent_path() / ".locks" / repo_dir_.filename() / (file.blob_id + ".lock"));
    if (fs::exists(blob_path(file))) return;  // another process finished it while we waited for the lock
    const fs::path part = partial_path(file);
    const std::string url = endpoint_ + "/" + ref_.repo_id + "/resolve/" + commit + "/" + url_escape(file.name);
    const std::string what = model_name() + ": " + file.name;
    int failed_attempts = 0;
    bool refetched_after_mismatch = false;
    for (;;) {
      std::uint64_t have = partial_size(file);
      if (have > file.size) {  // not a prefix of this file: start over
        fs::remove(part);
        have = 0;
      }
      ContentHasher hasher(file.is_lfs, file.size);
      hash_existing_part(part, have, hasher);
      std::uint64_t received = have;
      if (have < file.size) {
        Progress progress(file.name, file.size, have, quiet_);
        Response response = fetch_into(what, part, url, have, file.size, hasher, received, progress);
        bool retry = is_interrupted(response.curl_code) || (response.curl_code == CURLE_OK && response.status >= 500);
        if (retry && ++failed_attempts < kMaxTransferAttempts) {
          progress.abandon();
          std::this_thread::sleep_for(std::chrono::seconds(failed_attempts - 1));
          continue;
        }
        if (response.curl_code != CURLE_OK && received <= file.size) {
          progress.abandon();
          if (is_unreachable(response.curl_code)) throw_unreachable(response);
          std::string attempts = retry ? " " + std::to_string(kMaxTransferAttempts) + " times" : "";
          throw Error(what + ": download failed" + attempts + ": " + response.curl_message +
                      "; run again to resume from " + format_bytes(double(partial_size(file))));
        }
        if (response.status >= 300) {
          progress.abandon();
          if (partial_size(file) == 0) fs::remove(part);  // error pages never reach the file
          throw_http_error(response, what, url, token_.has_value());
        }
        progress.finish();
      }
      std::string digest = hasher.hex_digest();
      if (received == file.size && digest == file.blob_id) {
        fs::rename(part, blob_path(file));
        return;
      }
      fs::remove(part);  // a corrupted file must not be resumed from
      std::string mismatch = received != file.size
                                 ? "size " + std::to_string(received) + " instead of " + std::to_string(file.size)
                                 : std::string(hasher.name()) + " " + digest + " instead of " + file.blob_id;
      if (refetched_after_mismatch)
        throw Error(what + ": the downloaded file is corrupt twice in a row (" + mismatch + "); nothing was kept");
      if (!quiet_)
        std::fprintf(stderr, "fastvlm: %s is corrupt (%s); downloading it again\n", file.name.c_str(),
                     mismatch.c_str());
      refetched_after_mismatch = true;
    }
  }

  static void hash_existing_part(const fs::path& part, std::uint64_t size, ContentHasher& hasher) {
    if (size == 0) return;
    std::ifstream in(part, std::ios::binary);
    std::vector<char> buffer(1 << 20);
    std::uint64_t left = size;
    while (left > 0 && in.read(buffer.data(), std::streamsize(std::min<std::uint64_t>(left, buffer.size())))) {
      hasher.update(buffer.data(), size_t(in.gcount()));
      left -= std::uint64_t(in.gcount());
    }
    if (left > 0) throw Error("cannot read " + part.string() + " to check it");
  }

  // One GET appended to `part`. Bytes beyond `expected_size` stop the transfer (`received` then exceeds
  // it) rather than filling the disk with a wrong file.
  Response fetch_into(const std::string& what, const fs::path& part, const std::string& url, std::uint64_t have,
                      std::uint64_t expected_size, ContentHasher& hasher, std::uint64_t& received,
                      Progress& progress) const {
    std::unique_ptr<FILE, decltype(&std::fclose)> out(std::fopen(part.c_str(), "ab"), std::fclose);
    if (!out) throw_write_error(what, part, errno, expected_size - have);
    int write_errno = 0;
    bool first_chunk = true;
    Response response = http_get(url, token_, have, [&](const char* data, size_t size, long status) {
      if (first_chunk && have > 0 && status != 206) {  // the server ignored the Range: start from zero
        if (::ftruncate(fileno(out.get()), 0) != 0) {
          write_errno = errno;
          return false;
        }
        hasher.reset();
        received = 0;
      }
      first_chunk = false;
      received += size;
      if (received > expected_size) return false;
      if (std::fwrite(data, 1, size, out.get()) != size) {
        write_errno = errno;
        return false;
      }
      hasher.update(data, size);
      progress.update(received);
      return true;
    });
    if (std::fflush(out.get()) != 0 && write_errno == 0) write_errno = errno;
    if (write_errno != 0) {
      progress.abandon();
      throw_write_error(what, part, write_errno, expected_size - std::min(received, expected_size));
    }
    return response;
  }

  void link_into_snapshot(const RemoteFile& file, const fs::path& snapshot) const {
    fs::path link = snapshot / file.name;
    if (fs::exists(link)) return;
    fs::create_directories(snapshot);
    std::error_code ec;
    fs::remove(link, ec);  // a dangling link whose blob was deleted
    // Relative, as huggingface_hub makes them, so the cache can be moved as a whole.
    fs::create_symlink(fs::path("..") / ".." / "blobs" / file.blob_id, link, ec);
    if (ec) fs::copy_file(blob_path(file), link);  // a filesystem without symlinks
  }

  void write_ref(const std::string& commit) const {
    fs::path ref = repo_dir_ / "refs" / ref_.revision;
    fs::create_directories(ref.parent_path());
    fs::path temporary = ref;
    temporary += ".tmp" + std::to_string(::getpid());
    {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      out << commit;  // no newline, like huggingface_hub
      if (!out.flush()) throw_write_error(model_name(), temporary, errno, commit.size());
    }
    std::error_code ec;
    fs::rename(temporary, ref, ec);
    if (ec) {
      const std::string reason = ec.message();
      fs::remove(temporary, ec);
      throw Error(model_name() + ": cannot record the revision in " + ref.string() + ": " + reason);
    }
  }
};

}  // namespace

std::optional<ModelRef> parse_model_ref(std::string_view text) {
  ModelRef ref;
  std::string_view id = text;
  if (auto at = text.find('@'); at != std::string_view::npos) {
    id = text.substr(0, at);
    ref.revision = std::string(text.substr(at + 1));
    if (!is_valid_revision(ref.revision)) return std::nullopt;
  }
  auto slash = id.find('/');
  if (slash == std::string_view::npos || !is_valid_name_part(id.substr(0, slash)) ||
      !is_valid_name_part(id.substr(slash + 1)))
    return std::nullopt;
  ref.repo_id = std::string(id);
  return ref;
}

fs::path hub_cache_dir() {
  if (auto dir = env("HF_HUB_CACHE")) return expand_home(*dir);
  if (auto dir = env("HUGGINGFACE_HUB_CACHE")) return expand_home(*dir);  // the older name
  return hf_home() / "hub";
}

fs::path resolve_model(std::string_view model_arg, const DownloadOptions& options) {
  std::string arg(model_arg);
  if (fs::is_directory(arg)) return arg;
  auto ref = parse_model_ref(arg);
  if (!ref)
    throw Error("model '" + arg + "' is neither a directory nor a Hugging Face hub id such as " +
                std::string(kDefaultModel) + " or " + std::string(kDefaultModel) + "@main");

  HubClient client(*ref, options.quiet);
  std::optional<fs::path> cached;
  if (auto commit = read_ref(client.repo_dir(), ref->revision)) {
    fs::path snapshot = client.repo_dir() / "snapshots" / *commit;
    if (missing_engine_files(snapshot).empty()) cached = snapshot;
  }
  if (offline_mode()) {
    if (cached) return *cached;
    throw Error("HF_HUB_OFFLINE is set and " + arg + " is not complete in the cache " + client.repo_dir().string() +
                ": download it once with `fastvlm pull " + arg + "` while online");
  }
  if (cached && !options.check_for_updates) return *cached;
  return client.materialize(client.fetch_listing());
}

std::vector<CachedModel> list_cached_models() {
  std::vector<CachedModel> models;
  fs::path cache = hub_cache_dir();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(cache, ec)) {
    std::string folder = entry.path().filename().string();
    if (!entry.is_directory() || !folder.starts_with("models--")) continue;
    CachedModel model;
    model.dir = entry.path();
    model.repo_id = folder.substr(std::string_view("models--").size());
    if (auto separator = model.repo_id.find("--"); separator != std::string::npos)
      model.repo_id.replace(separator, 2, "/");
    for (const auto& blob : fs::directory_iterator(model.dir / "blobs", ec))
      if (blob.is_regular_file() && blob.path().extension() != ".incomplete") model.blob_bytes += blob.file_size();

    std::set<std::string> referenced;
    for (const auto& ref : fs::recursive_directory_iterator(model.dir / "refs", ec)) {
      if (!ref.is_regular_file()) continue;
      std::string commit = trim(read_small_file(ref.path()).value_or(""));
      referenced.insert(commit);
      model.revisions.push_back({fs::relative(ref.path(), model.dir / "refs").generic_string(), commit, false});
    }
    for (const auto& snapshot : fs::directory_iterator(model.dir / "snapshots", ec)) {
      std::string commit = snapshot.path().filename().string();
      if (!referenced.count(commit)) model.revisions.push_back({commit, commit, false});
    }
    for (auto& revision : model.revisions)
      revision.complete = missing_engine_files(model.dir / "snapshots" / revision.commit).empty();
    std::sort(model.revisions.begin(), model.revisions.end(),
              [](const auto& a, const auto& b) { return a.revision < b.revision; });
    models.push_back(std::move(model));
  }
  std::sort(models.begin(), models.end(), [](const auto& a, const auto& b) { return a.repo_id < b.repo_id; });
  return models;
}

}  // namespace fastvlm::hub
