#include "models/text_model.h"

#include "core/json_file.h"
#include "llm/decoder.h"

namespace fastvlm {

std::unique_ptr<Model> load_text_model(const std::string& family, const std::filesystem::path& dir, TextConfig config,
                                       const ModelLoadOptions& options) {
  read_generation_eos_ids(dir, config);
  auto model = std::make_unique<Model>();
  model->family = family;
  model->checkpoint = Checkpoint::open(dir);
  model->decoder = Decoder::load(*model->checkpoint, config, options.precision, options.quantize_llm);
  return model;
}

Architecture text_architecture(std::string family, std::vector<std::string> model_types,
                               std::vector<std::string> architectures,
                               std::function<TextConfig(const ConfigKeys& keys)> parse) {
  Architecture architecture;
  architecture.family = family;
  architecture.model_types = std::move(model_types);
  architecture.architectures = std::move(architectures);
  architecture.load = [family, parse](const std::filesystem::path& dir, const ModelLoadOptions& options) {
    const auto file = dir / "config.json";
    const nlohmann::json root = read_json_file(file);
    return load_text_model(family, dir, parse(ConfigKeys(root, file)), options);
  };
  architecture.quantizable_weights = [](const std::filesystem::path&) {
    return std::function<bool(const std::string&)>(is_decoder_linear_weight);
  };
  return architecture;
}

}  // namespace fastvlm
