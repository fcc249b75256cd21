#pragma once
// Reading a JSON file (config.json, tokenizer files, indexes) with errors that name the file.
#include <filesystem>
#include <nlohmann/json.hpp>

namespace fastvlm {

// Throws fastvlm::Error "<path>: cannot open" or "<path>: invalid JSON: <parser message>".
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace fastvlm
