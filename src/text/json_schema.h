#pragma once
// Constrained decoding for structured output: a JSON Schema compiled to a byte-level state machine
// (JsonMatcher), the vocabulary as a byte trie (TokenTrie), and the set of tokens that keep the output a
// valid prefix of a matching document (JsonConstraint::allowed), cached per matcher state.
//
// What is generated is a subset of the documents the schema accepts, chosen so that every state the
// matcher can reach still has a completion (no dead ends):
//   - no whitespace anywhere (compact JSON);
//   - object properties in the schema's order, optional ones skippable, no others (an object schema
//     without `properties` takes any keys, their values matching `additionalProperties`);
//   - numbers without exponent, at most kMaxNumberLength characters, bounds enforced digit by digit;
//   - `pattern` is anchored at both ends (a match of the anchored form also matches unanchored) and may
//     use literals, `.`, classes `[...]`, `\d \w \s`, and the quantifiers `? * + {n} {n,} {n,m}` (no
//     groups or alternation); strings with a pattern or format take no backslash escapes;
//   - `format` date, time, date-time and uuid are shapes of digits and letters (RFC 3339 in UTC, `Z`);
//     calendar validity (month 13) is not enforced;
//   - `\u` escapes never spell a UTF-16 surrogate (characters beyond the BMP are raw UTF-8).
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace fastvlm::text {

constexpr int kMaxNumberLength = 22;

class JsonSchema {
 public:
  // Throws fastvlm::Error naming the keyword (and where in the schema) that is invalid or unsupported.
  // Objects keep their keys in the order written (ordered_json), which is the order properties are generated in.
  static std::shared_ptr<const JsonSchema> compile(const nlohmann::ordered_json& schema);
  static std::shared_ptr<const JsonSchema> parse(std::string_view schema_text);  // invalid JSON too

  struct Node;
  const Node& node(uint32_t index) const;
  uint32_t root() const { return root_; }
  uint32_t free_string() const { return free_string_; }  // a string with no constraints: free object keys

  ~JsonSchema();

 private:
  friend class SchemaCompiler;
  std::vector<Node> nodes_;
  uint32_t root_ = 0, free_string_ = 0;
};

// Where a document is, byte by byte: a set of stacks (more than one while `anyOf` alternatives are
// undecided), each frame a container or the value being read.
class JsonMatcher {
 public:
  // The schema must outlive the matcher (a plain pointer: matchers are copied at every trie node).
  explicit JsonMatcher(const JsonSchema& schema);

  // False (and the matcher in an unspecified state) when the byte cannot continue the document.
  bool feed(uint8_t byte);
  bool feed(std::string_view bytes);
  // A whole document has been read (end-of-turn may follow).
  bool complete() const;
  // Identifies the state: equal keys accept the same continuations.
  std::string key() const;

  // Inside a string without a pattern, with no other reading of the document undecided: the characters
  // begun in it (one whose UTF-8 bytes or escape are being read counts) and how many it may hold.
  struct StringText {
    uint32_t begun = 0, max_length = 0;
    bool between_characters = false;  // no character is being read
  };
  std::optional<StringText> string_text() const;

  struct Frame {
    uint64_t set = 0;  // literal candidates, object key candidates, pattern positions
    uint32_t node = 0, count = 0, aux = 0;  // aux: key byte offset, chosen property, code point being read
    uint8_t phase = 0, need = 0, lo = 0, hi = 0, esc = 0, len = 0;
    char num[kMaxNumberLength] = {};
  };
  static_assert(sizeof(Frame) == 48, "no padding: key() copies frames byte for byte");

 private:
  const JsonSchema* schema_;
  std::vector<Frame> frames_;
  std::vector<uint32_t> ends_;  // end of each stack in frames_
  bool started_ = false;        // before the first byte the root value is still to be pushed
};

// Token ids by their bytes. Ids with no bytes and the `excluded` ones (end-of-turn, handled by the
// caller) are not in it.
//
// Most tokens are plain text: read from between two characters of a string without a pattern, they stay
// inside it (no `"`, no control byte; escapes and UTF-8 well formed, the last character possibly cut).
// Such a token is allowed there exactly when the string has room for the characters it begins, whatever
// the schema, so a string's mask is the plain tokens that fit plus a walk of the others only: a few
// thousand ids instead of the whole vocabulary.
class TokenTrie {
 public:
  TokenTrie(const std::vector<std::string_view>& token_bytes, std::span<const int32_t> excluded);
  size_t vocab_size() const { return vocab_size_; }

 private:
  friend class JsonConstraint;
  // Nodes breadth-first, so each node's children are contiguous.
  struct Trie {
    struct Node {
      uint32_t first_child = 0, child_count = 0, first_token = 0, token_count = 0;
    };
    std::vector<Node> nodes;
    std::vector<uint8_t> edge_byte;  // per node (the byte leading to it)
    std::vector<int32_t> tokens;
    Trie(const std::vector<std::string_view>& token_bytes, std::vector<int32_t> ids);
  };
  Trie all_, not_plain_;
  std::vector<int32_t> plain_;          // plain-text ids, fewest characters first
  std::vector<uint32_t> plain_within_;  // plain_within_[n]: how many of them begin at most n characters
  size_t vocab_size_;
};

// The tokens allowed after a state, as a bitset over ids (bit i of word i/64), computed by walking the
// trie with the matcher (each trie edge one byte, so a token spanning several JSON values or UTF-8
// characters is checked whole; inside a string, only the tokens that are not plain text) and cached per
// state key: a string, a property name or an array reached again costs a lookup.
class JsonConstraint {
 public:
  JsonConstraint(std::shared_ptr<const JsonSchema> schema, std::shared_ptr<const TokenTrie> trie);
  JsonMatcher start() const { return JsonMatcher(*schema_); }
  struct Mask {
    std::vector<uint64_t> bits;
    size_t allowed = 0;
    bool test(int32_t id) const { return (bits[size_t(id) >> 6] >> (id & 63)) & 1; }
  };
  // Thread-safe.
  std::shared_ptr<const Mask> allowed(const JsonMatcher& state) const;

 private:
  void walk(const TokenTrie::Trie& trie, uint32_t node, size_t depth, std::vector<JsonMatcher>& levels,
            Mask& mask) const;

  std::shared_ptr<const JsonSchema> schema_;
  std::shared_ptr<const TokenTrie> trie_;
  mutable std::mutex mutex_;
  mutable std::unordered_map<std::string, std::shared_ptr<const Mask>> cache_;
};

}  // namespace fastvlm::text
