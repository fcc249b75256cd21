#pragma once
// The Qwen2 byte-level BPE tokenizer, read from a model directory: tokenizer.json (Hugging Face
// `tokenizers` format) or, when that is absent, the slow file set vocab.json + merges.txt +
// added_tokens.json / tokenizer_config.json.
//
// encode(): added tokens (<|im_start|>, ...) are found in the raw text first; every stretch between
// them is NFC-normalised, split by the Qwen2 pre-tokenizer, mapped to the GPT-2 byte alphabet and merged
// by BPE, lowest merge rank first. No BOS/EOS is added.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fastvlm::text {

// Bytes [begin, end) of a text.
struct TextRange {
  size_t begin = 0, end = 0;
};

class Tokenizer {
 public:
  // Throws fastvlm::Error naming the file and key when the files are missing, malformed or describe
  // a tokenizer other than Qwen2's (a different pre-tokenizer regex or normaliser).
  static std::unique_ptr<Tokenizer> load(const std::filesystem::path& model_dir);
  ~Tokenizer();

  // Throws fastvlm::Error with the byte offset of the first invalid UTF-8 sequence in `text`. Added
  // tokens are recognised anywhere except inside `plain_text` (sorted, disjoint byte ranges): there the
  // text is ordinary text even where it spells "<|im_start|>", so that what a user writes in a chat
  // message cannot become markup.
  std::vector<int32_t> encode(std::string_view text, std::span<const TextRange> plain_text = {}) const;

  // The bytes of the tokens, concatenated. Ids that are not tokens (negative, or past the vocabulary:
  // the embedding table is larger) contribute nothing. The result is not necessarily valid UTF-8 when
  // the ids split a character; StreamDecoder is the way to print tokens as they come.
  std::string decode(std::span<const int32_t> ids) const;

  // The bytes of one token; empty for ids that are not tokens.
  std::string_view token_bytes(int32_t id) const;

  // The id of an added token (by its content) or of a vocabulary token spelled as in vocab.json
  // (in the byte-level alphabet, e.g. "Ġworld"); -1 when there is none.
  int32_t token_to_id(std::string_view token) const;

  // One past the largest token id (vocabulary plus added tokens).
  size_t vocab_size() const;

  struct Model;  // vocabulary, merges and added tokens; defined in tokenizer.cpp

 private:
  explicit Tokenizer(std::unique_ptr<Model> model);
  std::unique_ptr<Model> model_;
};

// Turns generated ids into printable text one id at a time: bytes that end in an incomplete UTF-8
// sequence are held back until the next id completes them. Bytes that can never form a character are
// printed as U+FFFD, as is an incomplete sequence left over at flush().
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string push(int32_t id);
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
};

}  // namespace fastvlm::text
