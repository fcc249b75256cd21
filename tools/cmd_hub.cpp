// `fastvlm pull ID` downloads a model from the Hugging Face hub without running it; `fastvlm list` shows
// what the shared Hugging Face cache holds.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "hub/hub.h"
#include "models/registry.h"

namespace fastvlm::cli {

namespace {

void add_pull_command(CLI::App& app) {
  struct Arguments {
    std::string model{hub::kDefaultModel};
    bool quiet = false;
  };
  auto args = std::make_shared<Arguments>();
  CLI::App* pull = app.add_subcommand("pull", "Download a model from the Hugging Face hub into the local cache");
  pull->add_option("model", args->model, "Hub id: owner/name[@revision]")->capture_default_str();
  pull->add_flag("-q,--quiet", args->quiet, "No progress output");
  pull->callback([args] {
    if (!hub::parse_model_ref(args->model))
      throw Error("'" + args->model + "' is not a hub id such as " + std::string(hub::kDefaultModel) + "@main");
    // Unlike `run`, pull asks the hub whether the revision moved even when the cache looks complete.
    hub::DownloadOptions options;
    options.quiet = args->quiet;
    options.check_for_updates = true;
    std::printf("%s\n", hub::resolve_model(args->model, options).c_str());
  });
}

// The registry's family for a snapshot's config.json; "?" when it has none the engine knows.
std::string family_of(const std::filesystem::path& snapshot) {
  try {
    return find_architecture(snapshot).family;
  } catch (const Error&) {
    return "?";
  }
}

void add_list_command(CLI::App& app) {
  CLI::App* list = app.add_subcommand("list", "List the models in the Hugging Face cache with their sizes");
  list->callback([] {
    auto models = hub::list_cached_models();
    if (models.empty()) {
      std::printf("no models in %s\n", hub::hub_cache_dir().c_str());
      return;
    }
    std::printf("%-40s %10s  %-20s %-12s %-8s %s\n", "MODEL", "SIZE", "REVISION", "COMMIT", "FAMILY", "STATUS");
    for (const auto& model : models) {
      std::string size = hub::format_bytes(double(model.blob_bytes));
      if (model.revisions.empty()) std::printf("%-40s %10s  (no snapshot)\n", model.repo_id.c_str(), size.c_str());
      for (const auto& revision : model.revisions) {
        std::printf("%-40s %10s  %-20s %-12s %-8s %s\n", model.repo_id.c_str(), size.c_str(), revision.revision.c_str(),
                    revision.commit.substr(0, 12).c_str(), family_of(model.dir / "snapshots" / revision.commit).c_str(),
                    revision.complete ? "complete" : "incomplete");
        size.clear();  // the blobs are shared by a model's revisions: show their size once
      }
    }
    std::printf("cache: %s\n", hub::hub_cache_dir().c_str());
  });
}

}  // namespace

void add_hub_commands(CLI::App& app) {
  add_pull_command(app);
  add_list_command(app);
}

}  // namespace fastvlm::cli
