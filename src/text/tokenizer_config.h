#pragma once
// What tokenizer_config.json says about prompting a model: its Jinja chat_template, its BOS/EOS token
// strings, and whether a raw prompt starts with BOS. The tokens themselves are the Tokenizer's business.
#include <filesystem>
#include <string>

namespace fastvlm::text {

struct TokenizerConfig {
  std::string chat_template;  // empty when the model has none
  std::string bos_token, eos_token;
  bool add_bos_token = false;
};

// Reads `dir`/tokenizer_config.json; a missing file gives the defaults. `chat_template` may be a string or
// Hugging Face's list of named templates (the one named "default" is taken). Throws fastvlm::Error naming
// the file and key for a value of the wrong type.
TokenizerConfig read_tokenizer_config(const std::filesystem::path& dir);

}  // namespace fastvlm::text
