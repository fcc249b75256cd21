#pragma once
// Every model family the engine can run, found by config.json's `model_type`. Adding a family: a folder
// src/models/<family>/ with its config parsing and loading, and one line in registry.cpp.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"

namespace fastvlm {

// The families, in a stable order.
const std::vector<const Architecture*>& architectures();

// The family of the model in `dir` (from config.json's model_type). Throws fastvlm::Error naming the file
// and key, with the known model types, for anything else.
const Architecture& find_architecture(const std::filesystem::path& dir);

// find_architecture(dir).load(dir, options).
std::unique_ptr<Model> load_model(const std::filesystem::path& dir, const ModelLoadOptions& options);

}  // namespace fastvlm
