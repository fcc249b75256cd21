// fastvlm caption: every image of folders, globs or a list file captioned into JSONL, one object per image
// appended and flushed as soon as it is done, so a crash loses at most the image in flight and --resume
// picks the run up where it stopped. A background thread encodes the next images while the current one
// generates.
#include <glob.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>

#include "commands.h"
#include "common.h"
#include "core/error.h"

namespace fastvlm::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

bool has_image_extension(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp";
}

void add_directory(const fs::path& dir, std::vector<std::string>& out) {
  std::vector<std::string> found;
  for (const auto& entry : fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied))
    if (entry.is_regular_file() && has_image_extension(entry.path())) found.push_back(entry.path().string());
  // Directory order is whatever the filesystem gives; sorted, two runs (and --resume) see the same order.
  std::sort(found.begin(), found.end());
  out.insert(out.end(), found.begin(), found.end());
}

void add_glob(const std::string& pattern, std::vector<std::string>& out) {
  glob_t matches{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &matches);
  if (rc == GLOB_NOMATCH) throw Error("no file matches " + pattern);
  if (rc != 0) throw Error("cannot expand " + pattern);
  for (size_t i = 0; i < matches.gl_pathc; ++i)
    if (fs::is_regular_file(matches.gl_pathv[i])) out.emplace_back(matches.gl_pathv[i]);
  globfree(&matches);
}

void add_list(std::istream& in, std::vector<std::string>& out) {
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
}

// Directories (recursive, image extensions only), glob patterns (every file they match) and named files, then
// the list file's lines, in that order, each path once.
std::vector<std::string> collect_inputs(const std::vector<std::string>& inputs, const std::string& list) {
  std::vector<std::string> paths;
  for (const std::string& input : inputs) {
    if (fs::is_directory(input))
      add_directory(input, paths);
    else if (input.find_first_of("*?[") != std::string::npos)
      add_glob(input, paths);
    else
      paths.push_back(input);  // a missing or unreadable file becomes an error record, like a corrupt one
  }
  if (list == "-") {
    add_list(std::cin, paths);
  } else if (!list.empty()) {
    std::ifstream in(list);
    if (!in) throw Error("cannot open list file " + list + ": " + std::strerror(errno));
    add_list(in, paths);
  }
  std::unordered_set<std::string> seen;
  std::erase_if(paths, [&seen](const std::string& p) { return !seen.insert(p).second; });
  return paths;
}

// The paths an earlier run recorded in `output`. A last line without its newline is what a crash in the
// middle of a write leaves: it is cut away, and that image is captioned again.
std::unordered_set<std::string> recorded_paths(const std::string& output) {
  std::unordered_set<std::string> paths;
  std::ifstream in(output, std::ios::binary);
  if (!in) return paths;
  const std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const size_t complete = content.rfind('\n') == std::string::npos ? 0 : content.rfind('\n') + 1;
  if (complete < content.size()) {
    fs::resize_file(output, complete);
    std::fprintf(stderr, "caption: removed a half-written last line from %s\n", output.c_str());
  }
  size_t line_no = 0;
  for (size_t begin = 0; begin < complete;) {
    const size_t end = content.find('\n', begin);
    ++line_no;
    const std::string_view line(content.data() + begin, end - begin);
    begin = end + 1;
    if (line.empty()) continue;
    const auto record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_discarded() || !record.is_object() || !record.contains("path") || !record["path"].is_string())
      throw Error(output + ":" + std::to_string(line_no) + ": not a caption record (a JSON object with a \"path\")");
    paths.insert(record["path"].get<std::string>());
  }
  return paths;
}

// An image encoded ahead of its turn: the engine keeps its embeddings in its image cache, where the
// Session::ask of that image finds them.
struct Prefetched {
  Timings timings;
  std::string error;  // empty when the image encoded
};

// Encodes up to `depth` images ahead of the one the main thread is generating for, on one thread of its own.
class Prefetcher {
 public:
  Prefetcher(const Engine& engine, const std::vector<std::string>& paths, size_t depth)
      : engine_(engine), paths_(paths), depth_(depth), worker_([this] { run(); }) {}
  ~Prefetcher() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    changed_.notify_all();
    worker_.join();
  }

  // The next path's encode, in order; blocks until it is there.
  Prefetched next() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return !ready_.empty(); });
    Prefetched item = std::move(ready_.front());
    ready_.pop_front();
    changed_.notify_all();
    return item;
  }

 private:
  void run() {
    // Engine::load applied --threads to the thread that loaded it only (an OpenMP setting is per thread);
    // without this the encodes here would run on one thread per core, on top of the generating thread's.
    if (engine_.options().threads > 0) omp_set_num_threads(engine_.options().threads);
    for (const std::string& path : paths_) {
      {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [this] { return stop_ || ready_.size() < depth_; });
        if (stop_) return;
      }
      Prefetched item;
      try {
        engine_.embed_image(ImageInput::file(path), &item.timings);
      } catch (const std::exception& e) {
        item.error = e.what();
      }
      std::lock_guard lock(mutex_);
      ready_.push_back(std::move(item));
      changed_.notify_all();
    }
  }

  const Engine& engine_;
  const std::vector<std::string>& paths_;
  const size_t depth_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Prefetched> ready_;
  bool stop_ = false;
  std::thread worker_;  // last: it starts once everything it reads is constructed
};

std::string clock_text(double seconds) {
  const long s = long(seconds + 0.5);
  char text[32];
  if (s >= 3600)
    std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(text, sizeof text, "%ld:%02ld", s / 60, s % 60);
  return text;
}

// done/total, images per second and the time left: a bar redrawn in place on a terminal, else a plain line
// every 10 seconds (logs of batch jobs).
class Progress {
 public:
  Progress(size_t total, bool quiet) : total_(total), quiet_(quiet), tty_(::isatty(STDERR_FILENO)) {}

  void update(size_t done, size_t failed, bool last = false) {
    if (quiet_) return;
    const auto now = Clock::now();
    const double since_draw = std::chrono::duration<double>(now - drawn_).count();
    if (!last && since_draw < (tty_ ? 0.1 : 10.0)) return;
    drawn_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double rate = elapsed > 0 ? double(done) / elapsed : 0;
    const std::string eta = rate > 0 ? clock_text(double(total_ - done) / rate) : "?";
    const std::string failures = failed ? ", " + std::to_string(failed) + " failed" : "";
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = total_ ? int(kWidth * done / total_) : kWidth;
      std::fprintf(stderr, "\r[%s%s] %zu/%zu  %.2f img/s  ETA %s%s\033[K", std::string(filled, '#').c_str(),
                   std::string(kWidth - filled, '.').c_str(), done, total_, rate, eta.c_str(), failures.c_str());
      if (last) std::fputc('\n', stderr);
    } else {
      std::fprintf(stderr, "caption: %zu/%zu images, %.2f img/s, ETA %s%s\n", done, total_, rate, eta.c_str(),
                   failures.c_str());
    }
    std::fflush(stderr);
  }

 private:
  const size_t total_;
  const bool quiet_, tty_;
  const Clock::time_point start_ = Clock::now();
  Clock::time_point drawn_ = start_;
};

}  // namespace

void add_caption_command(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    GenerateOptions generate;
    std::vector<std::string> inputs;
    std::string list, output, prompt = "Describe the image.";
    bool resume = false;
    size_t prefetch = 1;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* command = app.add_subcommand(
      "caption",
      "Caption every image of folders, globs or a list file into JSONL. Exit status: 0 when every image was "
      "captioned, else the number that failed (at most 125); 1 also for an error that stops the run");
  flags->model.add_to(*command);
  add_generate_flags(*command, flags->generate);
  command->add_option("inputs", flags->inputs,
                      "Folders (searched recursively for .jpg .jpeg .png .webp), glob patterns (quote them) or image files");
  command->add_option("-l,--list", flags->list, "A file naming one image per line (- for stdin)");
  command->add_option("-o,--output", flags->output, "JSONL file the records are appended to (default: stdout)");
  command->add_flag("--resume", flags->resume, "Skip the images already recorded in --output")->needs("--output");
  command->add_option("-p,--prompt", flags->prompt, "The question asked of every image")->capture_default_str();
  command->add_option("--prefetch", flags->prefetch, "Images encoded ahead on a background thread (0: none)")
      ->capture_default_str();
  command->callback([flags] {
    const std::vector<std::string> all = collect_inputs(flags->inputs, flags->list);
    if (all.empty()) throw Error("no images to caption: name folders, globs, files or --list");
    std::unordered_set<std::string> done_before;
    if (flags->resume) {
      done_before = recorded_paths(flags->output);
    } else if (!flags->output.empty() && fs::exists(flags->output) && fs::file_size(flags->output) > 0) {
      throw Error(flags->output + " already holds captions: pass --resume to continue it, or remove it");
    }
    std::vector<std::string> paths;
    std::copy_if(all.begin(), all.end(), std::back_inserter(paths),
                 [&](const std::string& p) { return !done_before.contains(p); });

    if (!flags->model.quiet && !done_before.empty())
      std::fprintf(stderr, "caption: %zu of %zu images already in %s\n", all.size() - paths.size(), all.size(),
                   flags->output.c_str());
    if (paths.empty()) return;  // every image is already recorded: no model to load
    auto engine = flags->model.load();
    if (engine->info().image_tokens == 0)
      throw Error("model " + engine->info().path + " (" + engine->info().family + ") has no vision encoder");
    std::unique_ptr<FILE, int (*)(FILE*)> file(nullptr, std::fclose);  // closed on every way out
    if (!flags->output.empty()) {
      file.reset(std::fopen(flags->output.c_str(), "ab"));
      if (!file) throw Error("cannot open " + flags->output + ": " + std::strerror(errno));
    }
    FILE* out = file ? file.get() : stdout;
    auto write = [&](const nlohmann::ordered_json& record) {
      const std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
      if (std::fwrite(line.data(), 1, line.size(), out) != line.size() || std::fflush(out) != 0)
        throw Error("cannot write " + (flags->output.empty() ? std::string("stdout") : flags->output) + ": " +
                    std::strerror(errno));
    };

    std::optional<Prefetcher> prefetcher;
    if (flags->prefetch > 0) prefetcher.emplace(*engine, paths, flags->prefetch);
    Session session(*engine);
    Progress progress(paths.size(), flags->model.quiet);
    size_t failed = 0;
    for (size_t i = 0; i < paths.size(); ++i) {
      nlohmann::ordered_json record = {{"path", paths[i]}};  // "path" first, for people reading the file
      try {
        const Prefetched encoded = prefetcher ? prefetcher->next() : Prefetched{};
        if (!encoded.error.empty()) throw Error(encoded.error);
        session.reset();  // every image is a conversation of its own
        const ImageInput image = ImageInput::file(paths[i]);
        Generation answer = session.ask(flags->prompt, &image, flags->generate);
        if (prefetcher) {  // the encode ran ahead; ask found its embeddings in the engine's image cache
          answer.timings.preprocess_ms = encoded.timings.preprocess_ms;
          answer.timings.vision_ms = encoded.timings.vision_ms;
          answer.timings.projector_ms = encoded.timings.projector_ms;
        }
        record["text"] = answer.text;
        record["prompt_tokens"] = answer.prompt_tokens;
        record["tokens"] = answer.token_ids.size();
        record["timings"] = timings_json(answer.timings);
      } catch (const Error& e) {
        record["error"] = e.what();
        ++failed;
      }
      write(record);
      progress.update(i + 1, failed, i + 1 == paths.size());
    }
    if (failed > 0) throw CLI::RuntimeError(int(std::min<size_t>(failed, 125)));
  });
}

}  // namespace fastvlm::cli
