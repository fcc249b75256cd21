#include "text/tokenizer.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <climits>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "core/json_file.h"
#include "text/unicode.h"

namespace fastvlm::text {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The split regex of Qwen2's pre-tokenizer. The splitter below is a hand-written equivalent of exactly
// this pattern, so a tokenizer.json that names any other pattern is refused rather than mis-tokenised.
constexpr std::string_view kQwen2SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Pieces longer than this are BPE-merged without consulting the cache: long pieces rarely repeat.
constexpr size_t kMaxCachedPieceBytes = 48;
// The cache is emptied when it reaches this many pieces, which bounds its memory on endless input.
constexpr size_t kMaxCachedPieces = 1 << 16;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringToId = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// GPT-2's reversible mapping of the 256 byte values onto printable code points: printable Latin-1
// bytes stand for themselves, the others are numbered from U+0100 on. Vocabulary files spell tokens
// in this alphabet; internally tokens are kept as raw bytes.
class ByteAlphabet {
 public:
  ByteAlphabet() {
    byte_of_char_.fill(-1);
    char32_t next_substitute = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t c = printable ? char32_t(b) : next_substitute++;
      byte_of_char_[c] = int16_t(b);
    }
  }

  // The raw bytes of a token spelled in the alphabet; nullopt when a character is outside it.
  std::optional<std::string> to_bytes(std::string_view spelling) const {
    if (find_invalid_utf8(spelling)) return std::nullopt;
    std::string bytes;
    size_t pos = 0;
    while (pos < spelling.size()) {
      const char32_t c = next_code_point(spelling, pos);
      if (c >= byte_of_char_.size() || byte_of_char_[c] < 0) return std::nullopt;
      bytes.push_back(char(byte_of_char_[c]));
    }
    return bytes;
  }

 private:
  std::array<int16_t, 0x100 + 68> byte_of_char_;  // 68 bytes need a substitute
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

// ---- pre-tokenizer ---------------------------------------------------------------------------------

enum CharClass : uint8_t {
  kLetter = 1,      // \p{L}
  kNumber = 2,      // \p{N}
  kWhitespace = 4,  // \s
  kNewline = 8,     // [\r\n] (also kWhitespace)
  kEnd = 16,        // the sentinel after the last character
};

struct ClassifiedChar {
  uint32_t offset;  // byte offset in the text
  char32_t value;
  uint8_t classes;
};

uint8_t classify(char32_t c) {
  if (c == '\r' || c == '\n') return kNewline | kWhitespace;
  if (is_letter(c)) return kLetter;
  if (is_number(c)) return kNumber;
  if (is_whitespace(c)) return kWhitespace;
  return 0;
}

// [^\s\p{L}\p{N}]: punctuation, symbols, controls, format characters, unassigned...
bool is_other(uint8_t classes) { return (classes & (kLetter | kNumber | kWhitespace | kEnd)) == 0; }

size_t run_end(const std::vector<ClassifiedChar>& chars, size_t i, uint8_t classes) {
  while (chars[i].classes & classes) ++i;
  return i;
}

size_t other_run_end(const std::vector<ClassifiedChar>& chars, size_t i) {
  while (is_other(chars[i].classes)) ++i;
  return i;
}

// End of `(?i:'s|'t|'re|'ve|'m|'ll|'d)` matched at chars[i] (an apostrophe), or 0.
size_t contraction_end(const std::vector<ClassifiedChar>& chars, size_t i) {
  static constexpr std::string_view kSuffixes[] = {"s", "t", "re", "ve", "m", "ll", "d"};
  for (std::string_view suffix : kSuffixes) {
    size_t k = 0;
    // The sentinel's value 0 never folds to a letter, so this stops at the end of the text.
    while (k < suffix.size() && simple_case_fold(chars[i + 1 + k].value) == char32_t(suffix[k])) ++k;
    if (k == suffix.size()) return i + 1 + k;
  }
  return 0;
}

// End of the piece that the Qwen2 regex matches at chars[i]: the alternatives are tried in the
// regex's order and the first that matches wins, as in a backtracking engine.
size_t piece_end(const std::vector<ClassifiedChar>& chars, size_t i) {
  const uint8_t classes = chars[i].classes;
  if (chars[i].value == '\'') {
    if (const size_t end = contraction_end(chars, i)) return end;
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (classes & kLetter) return run_end(chars, i, kLetter);
  if (!(classes & (kNewline | kNumber)) && (chars[i + 1].classes & kLetter)) return run_end(chars, i + 1, kLetter);
  // \p{N}: one digit per piece
  if (classes & kNumber) return i + 1;
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  const size_t symbols_start = (chars[i].value == ' ' && is_other(chars[i + 1].classes)) ? i + 1 : i;
  if (is_other(chars[symbols_start].classes)) return run_end(chars, other_run_end(chars, symbols_start), kNewline);

  // Only whitespace can start here.
  const size_t space_end = run_end(chars, i, kWhitespace);
  // \s*[\r\n]+: backtracking gives back whitespace until the match ends right after the run's last newline.
  for (size_t k = space_end; k > i; --k) {
    if (chars[k - 1].classes & kNewline) return k;
  }
  // \s+(?!\S) takes the run, less the character before a non-space; a single space before a
  // non-space is left to the final \s+.
  if ((chars[space_end].classes & kEnd) || space_end - i == 1) return space_end;
  return space_end - 1;
}

// ---- BPE -------------------------------------------------------------------------------------------

struct Merge {
  int32_t rank;
  int32_t merged_id;
};

uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

// Merges keyed by the pair of token ids, in one flat open-addressing array: the lookup is the inner
// loop of BPE, and a linear probe touches one cache line where a node-based map chases pointers.
class MergeTable {
 public:
  MergeTable() { rehash(1024); }

  void reserve(size_t count) {
    if (count * 2 > slots_.size()) rehash(count * 2);
  }

  // Keeps the first merge given for a pair (the higher priority); returns whether it was new.
  bool insert(uint64_t key, Merge merge) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
    Slot& slot = slots_[probe(key)];
    if (slot.key == key) return false;
    slot = {key, merge};
    ++size_;
    return true;
  }

  const Merge* find(uint64_t key) const {
    const Slot& slot = slots_[probe(key)];
    return slot.key == key ? &slot.merge : nullptr;
  }

  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~0ull;  // never a key: token ids are non-negative int32
  struct Slot {
    uint64_t key = kEmpty;
    Merge merge{};
  };

  // Index of the slot holding `key`, or of the empty slot where it belongs.
  size_t probe(uint64_t key) const {
    const size_t mask = slots_.size() - 1;
    size_t index = size_t((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
    while (slots_[index].key != key && slots_[index].key != kEmpty) index = (index + 1) & mask;
    return index;
  }

  void rehash(size_t min_slots) {
    size_t capacity = 1;
    while (capacity < min_slots) capacity *= 2;
    std::vector<Slot> old = std::exchange(slots_, std::vector<Slot>(capacity));
    for (const Slot& slot : old) {
      if (slot.key != kEmpty) slots_[probe(slot.key)] = slot;
    }
  }

  std::vector<Slot> slots_;
  size_t size_ = 0;
};

// A pair of adjacent symbols that a merge applies to, valid while both symbols are unchanged.
struct MergeCandidate {
  int32_t rank;
  int32_t left;  // index of the left symbol (its first byte in the piece)
  int32_t left_id;
  int32_t right_id;
  int32_t merged_id;
};

// Lowest rank first; among equal ranks the leftmost pair.
struct LaterCandidate {
  bool operator()(const MergeCandidate& a, const MergeCandidate& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
  }
};

struct Symbol {
  int32_t id;  // -1 once merged into its left neighbour
  int32_t prev;
  int32_t next;
};

// Buffers reused across pieces on each thread, so that pieces are split and merged without allocating.
struct EncodeScratch {
  std::vector<ClassifiedChar> chars;
  std::vector<Symbol> symbols;
  std::vector<MergeCandidate> heap;
  std::vector<int32_t> piece_ids;
};

EncodeScratch& thread_scratch() {
  thread_local EncodeScratch scratch;
  return scratch;
}

struct AddedToken {
  std::string content;
  int32_t id;
};

}  // namespace

struct Tokenizer::Model {
  std::vector<std::string> token_bytes;  // indexed by id; empty for ids that are not tokens
  StringToId vocab_by_bytes;
  std::array<int32_t, 256> byte_token{};
  MergeTable merges;
  std::vector<AddedToken> added_tokens;  // longest first, so that the longest match wins
  std::array<bool, 256> starts_added_token{};

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> piece_cache;

  void reserve(size_t vocab_entries, size_t merge_count) {
    vocab_by_bytes.reserve(vocab_entries);
    token_bytes.reserve(vocab_entries + 64);  // room for the added tokens after the vocabulary
    merges.reserve(merge_count);
  }

  // Ids index token_bytes, so each must lie below the number of tokens the files list (vocabulary plus
  // added tokens): one stray id of 2e9 would otherwise size a table of 2e9 strings.
  size_t listed_tokens = 0;

  void add_token(int32_t id, std::string bytes, const std::string& where) {
    if (id < 0 || size_t(id) >= listed_tokens)
      throw Error(where + ": token id " + std::to_string(id) + " is outside the vocabulary of " +
                  std::to_string(listed_tokens) + " listed tokens");
    if (size_t(id) >= token_bytes.size()) token_bytes.resize(size_t(id) + 1);
    token_bytes[size_t(id)] = std::move(bytes);
  }

  void add_vocab_entry(const std::string& spelling, int32_t id, const std::string& where) {
    std::optional<std::string> bytes = byte_alphabet().to_bytes(spelling);
    if (!bytes) throw Error(where + ": token \"" + spelling + "\" is not in the byte-level alphabet");
    // A spelling listed twice (a JSON object read member by member keeps both) is a broken vocabulary.
    if (!vocab_by_bytes.emplace(*bytes, id).second) throw Error(where + ": token \"" + spelling + "\" is listed twice");
    add_token(id, std::move(*bytes), where);
  }

  void add_merge(std::string_view left, std::string_view right, const std::string& where) {
    const std::optional<std::string> left_bytes = byte_alphabet().to_bytes(left);
    const std::optional<std::string> right_bytes = byte_alphabet().to_bytes(right);
    const auto left_id = left_bytes ? vocab_by_bytes.find(*left_bytes) : vocab_by_bytes.end();
    const auto right_id = right_bytes ? vocab_by_bytes.find(*right_bytes) : vocab_by_bytes.end();
    const auto merged_id = (left_bytes && right_bytes) ? vocab_by_bytes.find(*left_bytes + *right_bytes)
                                                      : vocab_by_bytes.end();
    if (left_id == vocab_by_bytes.end() || right_id == vocab_by_bytes.end() || merged_id == vocab_by_bytes.end()) {
      throw Error(where + ": merge \"" + std::string(left) + " " + std::string(right) +
                  "\" uses or makes a token that is not in the vocabulary");
    }
    // Ranks count the distinct merges in file order; a repeated merge keeps its first rank.
    merges.insert(pair_key(left_id->second, right_id->second), Merge{int32_t(merges.size()), merged_id->second});
  }

  void add_added_token(std::string content, int32_t id, const std::string& where) {
    if (content.empty()) throw Error(where + ": added token " + std::to_string(id) + " has empty content");
    if (std::any_of(added_tokens.begin(), added_tokens.end(), [&](const AddedToken& t) { return t.content == content; })) {
      return;  // listed in both added_tokens.json and tokenizer_config.json
    }
    add_token(id, content, where);
    added_tokens.push_back({std::move(content), id});
  }

  void finish(const std::string& where) {
    // Without merges every byte stays a token of its own: not the model's tokenization, so the files are
    // broken (an empty merges.txt), not a tokenizer to run.
    if (merges.size() == 0) throw Error(where + ": the tokenizer has no merges");
    for (int b = 0; b < 256; ++b) {
      const auto it = vocab_by_bytes.find(std::string(1, char(b)));
      if (it == vocab_by_bytes.end()) {
        throw Error(where + ": the vocabulary has no token for byte " + std::to_string(b) +
                    " (not a byte-level BPE vocabulary)");
      }
      byte_token[size_t(b)] = it->second;
    }
    std::stable_sort(added_tokens.begin(), added_tokens.end(),
                     [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
    for (const AddedToken& token : added_tokens) starts_added_token[static_cast<unsigned char>(token.content[0])] = true;
  }

  // The added token that starts at text[pos], if any.
  const AddedToken* added_token_at(std::string_view text, size_t pos) const {
    if (!starts_added_token[static_cast<unsigned char>(text[pos])]) return nullptr;
    for (const AddedToken& token : added_tokens) {
      if (text.substr(pos).starts_with(token.content)) return &token;
    }
    return nullptr;
  }

  // Byte-pair merging of one piece, appended to `out`. The symbols form a linked list and the
  // applicable merges wait in a heap, so a piece of n bytes costs O(n log n), not O(n^2).
  void merge_piece(std::string_view piece, EncodeScratch& scratch, std::vector<int32_t>& out) const {
    const int32_t length = int32_t(piece.size());
    std::vector<Symbol>& symbols = scratch.symbols;
    symbols.resize(size_t(length));
    for (int32_t i = 0; i < length; ++i) {
      symbols[size_t(i)] = {byte_token[static_cast<unsigned char>(piece[size_t(i)])], i - 1,
                            i + 1 < length ? i + 1 : -1};
    }
    std::vector<MergeCandidate>& heap = scratch.heap;
    heap.clear();
    auto consider_pair = [&](int32_t left) {
      const int32_t right = symbols[size_t(left)].next;
      if (right < 0) return;
      const int32_t left_id = symbols[size_t(left)].id;
      const int32_t right_id = symbols[size_t(right)].id;
      const Merge* merge = merges.find(pair_key(left_id, right_id));
      if (!merge) return;
      heap.push_back({merge->rank, left, left_id, right_id, merge->merged_id});
      std::push_heap(heap.begin(), heap.end(), LaterCandidate{});
    };
    for (int32_t i = 0; i + 1 < length; ++i) consider_pair(i);

    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), LaterCandidate{});
      const MergeCandidate candidate = heap.back();
      heap.pop_back();
      Symbol& left = symbols[size_t(candidate.left)];
      // Stale when either symbol has been merged since: token ids only grow longer, so equal ids at
      // the same position mean the same two symbols.
      if (left.id != candidate.left_id || left.next < 0 || symbols[size_t(left.next)].id != candidate.right_id) {
        continue;
      }
      Symbol& right = symbols[size_t(left.next)];
      left.id = candidate.merged_id;
      left.next = right.next;
      if (right.next >= 0) symbols[size_t(right.next)].prev = candidate.left;
      right.id = -1;
      if (left.prev >= 0) consider_pair(left.prev);
      consider_pair(candidate.left);
    }
    for (int32_t i = 0; i >= 0; i = symbols[size_t(i)].next) out.push_back(symbols[size_t(i)].id);
  }

  void encode_piece(std::string_view piece, EncodeScratch& scratch, std::vector<int32_t>& out) const {
    if (piece.size() == 1) {
      out.push_back(byte_token[static_cast<unsigned char>(piece[0])]);
      return;
    }
    if (piece.size() > kMaxCachedPieceBytes) {
      merge_piece(piece, scratch, out);
      return;
    }
    {
      std::lock_guard lock(cache_mutex);
      const auto hit = piece_cache.find(piece);
      if (hit != piece_cache.end()) {
        out.insert(out.end(), hit->second.begin(), hit->second.end());
        return;
      }
    }
    scratch.piece_ids.clear();
    merge_piece(piece, scratch, scratch.piece_ids);
    out.insert(out.end(), scratch.piece_ids.begin(), scratch.piece_ids.end());
    std::lock_guard lock(cache_mutex);
    if (piece_cache.size() >= kMaxCachedPieces) piece_cache.clear();
    piece_cache.emplace(piece, scratch.piece_ids);
  }

  // Text between added tokens: NFC, then the pre-tokenizer's pieces, each merged on its own.
  void encode_ordinary_text(std::string_view raw, std::vector<int32_t>& out) const {
    if (raw.empty()) return;
    const std::string text = nfc(raw);
    EncodeScratch& scratch = thread_scratch();
    std::vector<ClassifiedChar>& chars = scratch.chars;
    chars.clear();
    size_t pos = 0;
    while (pos < text.size()) {
      const auto offset = uint32_t(pos);
      const char32_t c = next_code_point(text, pos);
      chars.push_back({offset, c, classify(c)});
    }
    const size_t count = chars.size();
    chars.push_back({uint32_t(text.size()), 0, kEnd});
    for (size_t i = 0; i < count;) {
      const size_t end = piece_end(chars, i);
      encode_piece(std::string_view(text).substr(chars[i].offset, chars[end].offset - chars[i].offset), scratch, out);
      i = end;
    }
  }
};

namespace {

// A JSON value for a one-line message: at most 80 characters.
std::string excerpt(const json& value) {
  std::string text = value.dump();
  return text.size() > 80 ? text.substr(0, 77) + "..." : text;
}

// A token id as the files give it, checked before narrowing (4294967297 must not become 1).
int32_t token_id(const json& value, const std::string& where) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() > INT32_MAX)
    throw Error(where + ": token id " + excerpt(value) + " is not an integer in [0, 2^31)");
  return int32_t(value.get<int64_t>());
}

// tokenizer.json must describe the pipeline this file implements: NFC, the Qwen2 split, byte level, BPE.
void check_qwen2_pipeline(const json& config, const std::string& where) {
  const json& normalizer = config.value("normalizer", json());
  if (!normalizer.is_null() && normalizer.value("type", "") != "NFC") {
    throw Error(where + ": normalizer " + excerpt(normalizer) + " is not supported (Qwen2 uses NFC)");
  }
  const json& model = config.at("model");
  if (model.value("type", "BPE") != "BPE") {
    throw Error(where + ": model.type \"" + model.value("type", "") + "\" is not supported (expected BPE)");
  }
  const json& pre_tokenizer = config.value("pre_tokenizer", json());
  bool has_qwen2_split = false;
  if (pre_tokenizer.is_object() && pre_tokenizer.value("type", "") == "Sequence") {
    for (const json& step : pre_tokenizer.value("pretokenizers", json::array())) {
      if (step.value("type", "") == "Split" && step.contains("pattern") &&
          step["pattern"].value("Regex", "") == kQwen2SplitPattern) {
        has_qwen2_split = true;
      }
    }
  }
  if (!has_qwen2_split) {
    throw Error(where + ": pre_tokenizer is not Qwen2's (a Split on the Qwen2 regex followed by ByteLevel)");
  }
}

void load_tokenizer_json(Tokenizer::Model& model, const fs::path& path) {
  const std::string where = path.string();
  const json config = read_json_file(path);
  try {
    check_qwen2_pipeline(config, where);
    model.reserve(config.at("model").at("vocab").size(), config.at("model").at("merges").size());
    model.listed_tokens = config.at("model").at("vocab").size() + config.value("added_tokens", json::array()).size();
    for (const auto& [spelling, id] : config.at("model").at("vocab").items()) {
      model.add_vocab_entry(spelling, token_id(id, where), where);
    }
    for (const json& merge : config.at("model").at("merges")) {
      if (merge.is_array() && merge.size() == 2) {  // newer files: ["left", "right"]
        model.add_merge(merge[0].get<std::string>(), merge[1].get<std::string>(), where);
        continue;
      }
      const std::string line = merge.get<std::string>();  // legacy files: "left right"
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        throw Error(where + ": merge \"" + line + "\" is not two tokens separated by one space");
      }
      model.add_merge(std::string_view(line).substr(0, space), std::string_view(line).substr(space + 1), where);
    }
    for (const json& token : config.value("added_tokens", json::array())) {
      model.add_added_token(token.at("content").get<std::string>(), token_id(token.at("id"), where), where);
    }
  } catch (const json::exception& e) {
    throw Error(where + ": unexpected structure: " + e.what());
  }
  model.finish(where);
}

void load_slow_files(Tokenizer::Model& model, const fs::path& dir) {
  const fs::path config_path = dir / "tokenizer_config.json";
  const json config = fs::exists(config_path) ? read_json_file(config_path) : json::object();
  if (!config.is_object()) throw Error(config_path.string() + ": expected a JSON object");
  const std::string tokenizer_class = config.value("tokenizer_class", "Qwen2Tokenizer");
  if (!tokenizer_class.starts_with("Qwen2Tokenizer")) {
    throw Error(config_path.string() + ": tokenizer_class \"" + tokenizer_class +
                "\" is not supported (expected Qwen2Tokenizer)");
  }

  const fs::path vocab_path = dir / "vocab.json";
  // Read as it is parsed: 150k members, whose tree cost more than the rest of the vocabulary's load.
  std::vector<std::pair<std::string, int32_t>> vocab;
  read_flat_json_object(vocab_path, [&](std::string&& spelling, json&& id) {
    vocab.emplace_back(std::move(spelling), token_id(id, vocab_path.string()));
  });
  model.reserve(vocab.size(), vocab.size());  // BPE vocabularies have about as many merges as tokens
  model.listed_tokens = vocab.size() + config.value("added_tokens_decoder", json::object()).size();
  for (const auto& [spelling, id] : vocab) model.add_vocab_entry(spelling, id, vocab_path.string());

  const fs::path merges_path = dir / "merges.txt";
  std::ifstream merges_file(merges_path, std::ios::binary);
  if (!merges_file) throw Error("cannot open " + merges_path.string());
  std::string line;
  for (size_t line_number = 1; std::getline(merges_file, line); ++line_number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_number == 1 && line.starts_with("#version"))) continue;
    const size_t space = line.find(' ');
    const std::string where = merges_path.string() + ":" + std::to_string(line_number);
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
      throw Error(where + ": expected two tokens separated by one space, got \"" + line + "\"");
    }
    model.add_merge(std::string_view(line).substr(0, space), std::string_view(line).substr(space + 1), where);
  }

  try {
    const fs::path added_path = dir / "added_tokens.json";
    if (fs::exists(added_path)) {
      const json added_tokens = read_json_file(added_path);
      model.listed_tokens += added_tokens.size();
      for (const auto& [content, id] : added_tokens.items()) {
        model.add_added_token(content, token_id(id, added_path.string()), added_path.string());
      }
    }
    const json added_tokens_decoder = config.value("added_tokens_decoder", json::object());
    for (const auto& [id, token] : added_tokens_decoder.items()) {
      int32_t value = -1;
      const auto [end, error] = std::from_chars(id.data(), id.data() + id.size(), value);
      if (error != std::errc() || end != id.data() + id.size())
        throw Error(config_path.string() + ": added_tokens_decoder key \"" + id.substr(0, 40) + "\" is not a token id");
      model.add_added_token(token.at("content").get<std::string>(), value, config_path.string());
    }
  } catch (const json::exception& e) {
    throw Error(dir.string() + ": malformed added tokens: " + e.what());
  }
  model.finish(dir.string());
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Model> model) : model_(std::move(model)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const fs::path& model_dir) {
  auto model = std::make_unique<Model>();
  if (fs::exists(model_dir / "tokenizer.json")) {
    load_tokenizer_json(*model, model_dir / "tokenizer.json");
  } else if (fs::exists(model_dir / "vocab.json") && fs::exists(model_dir / "merges.txt")) {
    load_slow_files(*model, model_dir);
  } else {
    throw Error(model_dir.string() + ": no tokenizer found (expected tokenizer.json, or vocab.json and merges.txt)");
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(model)));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, std::span<const TextRange> plain_text) const {
  // Offsets and symbol indices are 32-bit; no prompt comes near this.
  constexpr size_t kMaxTextBytes = size_t(INT32_MAX) / 4;
  if (text.size() > kMaxTextBytes) {
    throw Error("cannot tokenize " + std::to_string(text.size()) + " bytes of text at once (the limit is " +
                std::to_string(kMaxTextBytes) + ")");
  }
  if (const std::optional<size_t> offset = find_invalid_utf8(text)) {
    throw Error("cannot tokenize: invalid UTF-8 at byte offset " + std::to_string(*offset));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  size_t segment_start = 0;
  auto plain = plain_text.begin();  // the first range that does not end before pos
  for (size_t pos = 0; pos < text.size();) {
    while (plain != plain_text.end() && plain->end <= pos) ++plain;
    if (plain != plain_text.end() && plain->begin <= pos) {
      pos = plain->end;
      continue;
    }
    const AddedToken* token = model_->added_token_at(text, pos);
    if (token && plain != plain_text.end() && pos + token->content.size() > plain->begin) token = nullptr;
    if (token) {
      model_->encode_ordinary_text(text.substr(segment_start, pos - segment_start), ids);
      ids.push_back(token->id);
      pos += token->content.size();
      segment_start = pos;
    } else {
      ++pos;
    }
  }
  model_->encode_ordinary_text(text.substr(segment_start), ids);
  return ids;
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || size_t(id) >= model_->token_bytes.size()) return {};
  return model_->token_bytes[size_t(id)];
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string bytes;
  for (const int32_t id : ids) bytes += token_bytes(id);
  return bytes;
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& added : model_->added_tokens) {
    if (added.content == token) return added.id;
  }
  const std::optional<std::string> bytes = byte_alphabet().to_bytes(token);
  if (!bytes) return -1;
  const auto it = model_->vocab_by_bytes.find(*bytes);
  return it == model_->vocab_by_bytes.end() ? -1 : it->second;
}

size_t Tokenizer::vocab_size() const { return model_->token_bytes.size(); }

std::string StreamDecoder::push(int32_t id) {
  pending_ += tokenizer_.token_bytes(id);
  std::string printable;
  size_t pos = 0;
  while (pos < pending_.size()) {
    const Utf8Sequence sequence = check_utf8_sequence(std::string_view(pending_).substr(pos));
    if (sequence.status == Utf8Status::Truncated) break;  // the next token may complete it
    if (sequence.status == Utf8Status::Valid) {
      printable.append(pending_, pos, sequence.length);
    } else {
      printable += "\xEF\xBF\xBD";  // U+FFFD for a byte that can start no character
    }
    pos += sequence.length;
  }
  pending_.erase(0, pos);
  return printable;
}

std::string StreamDecoder::flush() {
  std::string rest = pending_.empty() ? std::string() : std::string("\xEF\xBF\xBD");
  pending_.clear();
  return rest;
}

}  // namespace fastvlm::text
