#pragma once
// Models from the Hugging Face hub, kept in the cache that huggingface_hub (Python) uses, so a model
// downloaded by either tool is found by the other:
//
//   <cache>/models--<owner>--<name>/blobs/<blob id>          file contents; the id is the sha256 for
//                                                            LFS files, the git blob sha1 for the rest
//   <cache>/models--<owner>--<name>/snapshots/<commit>/<file> relative symlinks to ../../blobs/<blob id>
//   <cache>/models--<owner>--<name>/refs/<revision>          the commit the revision pointed to
//
// Policy for a branch name (`main`): a snapshot that refs/<revision> points to and that holds every file
// the engine needs is used without any request, so `fastvlm run` starts instantly and works on a plane.
// (huggingface_hub would ask the hub whether the branch moved; `fastvlm pull` does that.)
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fastvlm::hub {

// The model used when the user gives no -m.
inline constexpr std::string_view kDefaultModel = "apple/FastVLM-0.5B";

struct ModelRef {
  std::string repo_id;            // owner/name
  std::string revision = "main";  // branch, tag or 40-hex commit
};

// `owner/name` or `owner/name@revision`; nullopt for anything else. Does not look at the filesystem:
// a local directory that happens to be called `a/b` must be checked by the caller first.
std::optional<ModelRef> parse_model_ref(std::string_view text);

// $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
std::filesystem::path hub_cache_dir();

struct DownloadOptions {
  bool quiet = false;              // no progress output at all
  bool check_for_updates = false;  // ask the hub for the revision's commit even when the cache is complete
};

// A local directory is returned as it is. A hub id is resolved to its snapshot directory in the cache,
// downloading whatever the engine needs and is missing (config, generation config, safetensors and their
// index, tokenizer files). With HF_HUB_OFFLINE=1 only the cache is used. Environment: HF_ENDPOINT
// (default https://huggingface.co), HF_TOKEN or the token file ($HF_TOKEN_PATH, $HF_HOME/token).
// Throws fastvlm::Error with a message saying what to do (token, network, disk space, ...).
std::filesystem::path resolve_model(std::string_view model_arg, const DownloadOptions& options = {});

struct CachedRevision {
  std::string revision;  // refs/ name, or the commit itself for a snapshot no ref points to
  std::string commit;
  bool complete = false;  // holds every file the engine needs
};

struct CachedModel {
  std::string repo_id;
  std::filesystem::path dir;  // models--owner--name
  std::uintmax_t blob_bytes = 0;
  std::vector<CachedRevision> revisions;
};

// "1.5 GB": decimal units, as the hub shows sizes.
std::string format_bytes(double bytes);

// Every model repository in hub_cache_dir(), sorted by id (datasets and spaces are skipped).
std::vector<CachedModel> list_cached_models();

}  // namespace fastvlm::hub
