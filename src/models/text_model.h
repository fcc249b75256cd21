#pragma once
// The loading shared by the text-only families (Qwen2, LLaMA): the checkpoint as stored, the decoder
// graph with the config the family parsed, stop ids from generation_config.json.
#include <filesystem>
#include <memory>
#include <string>

#include "models/model.h"

namespace fastvlm {

std::unique_ptr<Model> load_text_model(const std::string& family, const std::filesystem::path& dir, TextConfig config,
                                       const ModelLoadOptions& options);

// An Architecture for a text-only family whose config.json `parse` reads.
Architecture text_architecture(std::string family, std::vector<std::string> model_types,
                               std::vector<std::string> architectures,
                               std::function<TextConfig(const ConfigKeys& keys)> parse);

}  // namespace fastvlm
