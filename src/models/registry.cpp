#include "models/registry.h"

#include "core/error.h"
#include "core/json_file.h"
#include "io/config_keys.h"
#include "models/fastvlm/fastvlm.h"
#include "models/llama/llama.h"
#include "models/qwen2/qwen2.h"

namespace fastvlm {

const std::vector<const Architecture*>& architectures() {
  static const std::vector<const Architecture*> all = {&fastvlm_architecture(), &qwen2_architecture(),
                                                       &llama_architecture()};
  return all;
}

const Architecture& find_architecture(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) throw Error(dir.string() + ": not a model directory");
  const auto file = dir / "config.json";
  const nlohmann::json root = read_json_file(file);
  const ConfigKeys keys(root, file);
  const std::string model_type = keys.string("model_type", "");
  std::string known;
  for (const Architecture* architecture : architectures())
    for (const std::string& type : architecture->model_types) {
      if (type == model_type) return *architecture;
      known += (known.empty() ? "\"" : ", \"") + type + "\"";
    }
  keys.fail("model_type", "one of " + known + " (a model family this engine runs)");
}

std::unique_ptr<Model> load_model(const std::filesystem::path& dir, const ModelLoadOptions& options) {
  std::unique_ptr<Model> model = find_architecture(dir).load(dir, options);
  model->checkpoint->release_again();
  return model;
}

}  // namespace fastvlm
