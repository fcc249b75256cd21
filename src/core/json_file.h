#pragma once
// Reading JSON from model files (config.json, tokenizer files, indexes, safetensors headers, hub
// listings) with errors that name the source. Every JSON the engine reads comes through here, so the
// limits below hold everywhere: code that walks or prints a parsed value recurses once per nesting level,
// and the tree costs about ten times the text, so depth and size are bounded before the tree is built.
#include <cstddef>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace fastvlm {

struct JsonLimits {
  // The largest tokenizer.json in use (Gemma's) is 33 MB; configs are a few kB.
  size_t max_bytes = size_t(64) << 20;
  // Model files nest at most 6 levels (a tokenizer's normalizer Sequence).
  int max_depth = 64;
};

// Throws fastvlm::Error "<source>: invalid JSON: <parser message>", "<source>: JSON nests deeper than
// <max_depth> levels" or "<source>: <n> bytes of JSON, more than the limit of <max_bytes>".
nlohmann::json parse_json(std::string_view text, const std::string& source, const JsonLimits& limits = {});

// parse_json of the file's content; also "<path>: cannot open".
nlohmann::json read_json_file(const std::filesystem::path& path, const JsonLimits& limits = {});

// For a file that is one flat JSON object of scalar members (a tokenizer's vocab.json: 150k token -> id):
// entry(name, value) for each member in file order, without building the tree (its ordered map of 150k
// nodes was a third of loading the Qwen2 tokenizer). Throws as read_json_file does, "<path>: expected one
// JSON object of names to scalar values" for any other shape, and whatever `entry` throws.
void read_flat_json_object(const std::filesystem::path& path,
                           const std::function<void(std::string&& name, nlohmann::json&& value)>& entry,
                           const JsonLimits& limits = {});

}  // namespace fastvlm
