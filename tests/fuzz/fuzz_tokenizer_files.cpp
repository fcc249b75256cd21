// libFuzzer target: the tokenizer files. The first byte picks which file the rest is: tokenizer.json
// (alone), or one of the slow set (vocab.json, merges.txt, added_tokens.json, tokenizer_config.json) beside
// the other files of tiny-tokenizer/ (the Qwen2 tokenizer cut down by make_seeds.py). A tokenizer that
// loads must encode and decode a mixed text; anything malformed must be a fastvlm::Error.
#include <array>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "fuzz_files.h"
#include "text/tokenizer.h"
#include "text/tokenizer_config.h"

namespace {

using namespace fastvlm;

constexpr std::array kFiles = {"tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json",
                               "tokenizer_config.json"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t which = data[0] % kFiles.size();
  const auto& dir = fuzz::scratch_dir();
  for (size_t i = 0; i < kFiles.size(); ++i) {
    fuzz::remove_file(kFiles[i]);
    if (i != which && which != 0 && i != 0)
      std::filesystem::copy_file(std::filesystem::path(FASTVLM_FUZZ_TINY_TOKENIZER) / kFiles[i], dir / kFiles[i]);
  }
  fuzz::write_file(kFiles[which], fuzz::as_text(data + 1, size - 1));
  try {
    const auto tokenizer = text::Tokenizer::load(dir);
    const std::vector<int32_t> ids = tokenizer->encode("a test <|im_end|> caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD 12345\n");
    tokenizer->decode(ids);
  } catch (const Error&) {
  }
  try {
    text::read_tokenizer_config(dir);
  } catch (const Error&) {
  }
  return 0;
}
