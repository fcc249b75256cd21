// fastvlm tokenize / detokenize: the model's tokenizer on JSON lines, for checking it against other
// implementations. One output line per input line, so the two files can be read side by side; a line
// that fails gives {"error": ...} on stdout, a message with its line number on stderr, and the command
// exits non-zero once every line has been processed.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace fastvlm::cli {
namespace {

using nlohmann::json;

// Decoded text can end inside a character when the ids split one; such bytes are written as U+FFFD.
std::string to_json_line(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

// Applies `convert` to each JSON line of `path` ("-" for standard input) and prints the results.
void process_jsonl(const std::string& command, const std::string& path,
                   const std::function<json(const json&)>& convert) {
  std::ifstream file;
  if (path != "-") {
    file.open(path, std::ios::binary);
    if (!file) throw Error("cannot open " + path);
  }
  std::istream& input = path == "-" ? std::cin : file;
  const std::string input_name = path == "-" ? "<stdin>" : path;
  size_t failed = 0, processed = 0;
  std::string line;
  for (size_t line_number = 1; std::getline(input, line); ++line_number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines carry no request
    ++processed;
    try {
      if (const std::optional<size_t> offset = text::find_invalid_utf8(line)) {
        throw Error("invalid UTF-8 at byte offset " + std::to_string(*offset) + " of the line");
      }
      json request;
      try {
        request = json::parse(line);
      } catch (const json::exception& e) {
        throw Error(std::string("not valid JSON: ") + e.what());
      }
      if (!request.is_object()) throw Error("expected a JSON object");
      std::cout << to_json_line(convert(request)) << '\n';
    } catch (const Error& e) {
      ++failed;
      std::cout << to_json_line(json{{"error", e.what()}}) << '\n';
      std::fprintf(stderr, "fastvlm %s: %s:%zu: %s\n", command.c_str(), input_name.c_str(), line_number, e.what());
    }
  }
  std::cout.flush();
  if (failed > 0) {
    throw Error(std::to_string(failed) + " of " + std::to_string(processed) + " lines of " + input_name + " failed");
  }
}

void add_jsonl_command(CLI::App& app, const std::string& name, const std::string& description,
                       std::function<json(const text::Tokenizer&, const json&)> convert) {
  struct Flags {
    std::string model_dir, jsonl;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* command = app.add_subcommand(name, description);
  command->add_option("-m,--model", flags->model_dir, "Model directory with the tokenizer files")->required();
  command->add_option("--jsonl", flags->jsonl, "JSON-lines input file, - for standard input")->required();
  command->callback([flags, name, convert] {
    const std::unique_ptr<text::Tokenizer> tokenizer = text::Tokenizer::load(flags->model_dir);
    process_jsonl(name, flags->jsonl, [&](const json& request) { return convert(*tokenizer, request); });
  });
}

}  // namespace

void add_tokenize_commands(CLI::App& app) {
  add_jsonl_command(app, "tokenize", "Token ids of text: {\"text\": ...} lines in, {\"ids\": [...]} lines out",
                    [](const text::Tokenizer& tokenizer, const json& request) {
                      const auto text = request.find("text");
                      if (text == request.end() || !text->is_string()) throw Error("expected a string \"text\"");
                      return json{{"ids", tokenizer.encode(text->get_ref<const std::string&>())}};
                    });
  add_jsonl_command(app, "detokenize", "Text of token ids: {\"ids\": [...]} lines in, {\"text\": ...} lines out",
                    [](const text::Tokenizer& tokenizer, const json& request) {
                      const auto ids = request.find("ids");
                      if (ids == request.end() || !ids->is_array()) throw Error("expected an array \"ids\"");
                      std::vector<int32_t> values;
                      for (const json& id : *ids) {
                        if (!id.is_number_integer()) throw Error("\"ids\" must hold integers, found " + id.dump());
                        // Ids too large for int32 are not tokens either: they decode to nothing, like any unknown id.
                        const bool fits = id.is_number_unsigned()
                                              ? id.get<uint64_t>() <= uint64_t(INT32_MAX)
                                              : id.get<int64_t>() >= INT32_MIN && id.get<int64_t>() <= INT32_MAX;
                        values.push_back(fits ? int32_t(id.get<int64_t>()) : -1);
                      }
                      return json{{"text", tokenizer.decode(values)}};
                    });
}

}  // namespace fastvlm::cli
