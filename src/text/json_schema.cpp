#include "text/json_schema.h"

#include <algorithm>
#include <cctype>
#include <bitset>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>

#include "core/error.h"

namespace fastvlm::text {

using json = nlohmann::ordered_json;

namespace {

// One element of an anchored pattern: a set of characters taken once, optionally, or any number of times.
struct PatternItem {
  std::bitset<128> ascii;
  bool non_ascii = false;
  enum Repeat : uint8_t { One, Optional, Star } repeat = One;
  bool matches(uint32_t c) const { return c < 128 ? ascii[c] : non_ascii; }
};

constexpr size_t kMaxPatternItems = 62;  // positions 0..items must fit a 64-bit set
constexpr size_t kMaxLiterals = 64;
constexpr size_t kMaxProperties = 64;
constexpr size_t kMaxDepth = 32;

}  // namespace

struct JsonSchema::Node {
  enum class Kind : uint8_t { Object, Array, String, Number, Literal, AnyOf } kind = Kind::Literal;
  struct Property {
    std::string key;  // JSON-encoded, quotes included
    uint32_t node = 0;
    bool required = false;
  };
  std::vector<Property> properties;
  bool free_keys = false;  // no `properties`: any key, values matching `value`
  uint32_t value = 0;
  uint32_t items = 0, min_items = 0, max_items = UINT32_MAX;
  uint32_t min_length = 0, max_length = UINT32_MAX;
  bool has_pattern = false;
  std::vector<PatternItem> pattern;
  bool integer = false, has_min = false, has_max = false, exclusive_min = false, exclusive_max = false;
  long double minimum = 0, maximum = 0;
  std::vector<std::string> literals;
  std::vector<uint32_t> alternatives;
};

JsonSchema::~JsonSchema() = default;
const JsonSchema::Node& JsonSchema::node(uint32_t index) const { return nodes_[index]; }

// ---------------------------------------------------------------------------------------------------
// Compiling

class SchemaCompiler {
 public:
  explicit SchemaCompiler(const json& root) : root_(root) {}

  std::shared_ptr<const JsonSchema> run() {
    auto schema = std::make_shared<JsonSchema>();
    out_ = schema.get();
    schema->free_string_ = add(make(Kind::String));
    schema->root_ = compile(root_, "#");
    return schema;
  }

 private:
  using Node = JsonSchema::Node;
  using Kind = Node::Kind;

  [[noreturn]] static void fail(const std::string& where, const std::string& message) {
    throw Error("json_schema: " + message + " (at " + where + ")");
  }

  static Node make(Kind kind) {
    Node node;
    node.kind = kind;
    return node;
  }

  uint32_t add(Node node) {
    out_->nodes_.push_back(std::move(node));
    return uint32_t(out_->nodes_.size() - 1);
  }

  // Any JSON value: the alternatives of its first byte, built once (free objects and arrays hold it).
  uint32_t any() {
    if (any_) return *any_;
    any_ = add({});
    Node object = make(Kind::Object);
    object.free_keys = true;
    object.value = *any_;
    Node array = make(Kind::Array);
    array.items = *any_;
    Node string = make(Kind::String);
    Node number = make(Kind::Number);
    Node words = make(Kind::Literal);
    words.literals = {"true", "false", "null"};
    Node any_of = make(Kind::AnyOf);
    any_of.alternatives = {add(object), add(array), add(string), add(number), add(words)};
    out_->nodes_[*any_] = std::move(any_of);
    return *any_;
  }

  uint32_t compile(const json& s, const std::string& where) {
    if (s.is_boolean()) {
      if (!s.get<bool>()) fail(where, "the schema 'false' accepts nothing");
      return any();
    }
    if (!s.is_object()) fail(where, "a schema must be an object or a boolean");
    static const std::set<std::string> annotations = {"title", "description", "default", "examples", "$schema",
                                                       "$id", "$comment", "readOnly", "writeOnly", "deprecated",
                                                       "$defs", "definitions"};
    static const std::set<std::string> supported = {
        "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "enum", "const",
        "pattern", "format", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "anyOf", "$ref"};
    for (const auto& [keyword, value] : s.items())
      if (!supported.count(keyword) && !annotations.count(keyword))
        fail(where, "unsupported keyword '" + keyword + "'");

    if (auto ref = s.find("$ref"); ref != s.end()) return resolve(*ref, where + "/$ref");
    if (auto it = s.find("const"); it != s.end()) return literal({*it}, where + "/const");
    if (auto it = s.find("enum"); it != s.end()) {
      if (!it->is_array() || it->empty()) fail(where + "/enum", "'enum' must be a non-empty array");
      return literal(std::vector<json>(it->begin(), it->end()), where + "/enum");
    }
    if (auto it = s.find("anyOf"); it != s.end()) {
      if (!it->is_array() || it->empty()) fail(where + "/anyOf", "'anyOf' must be a non-empty array");
      if (s.contains("type")) fail(where, "'anyOf' beside 'type' is not supported: put the type in each alternative");
      Node node = make(Kind::AnyOf);
      for (size_t i = 0; i < it->size(); ++i)
        node.alternatives.push_back(compile((*it)[i], where + "/anyOf/" + std::to_string(i)));
      return add(std::move(node));
    }
    auto type = s.find("type");
    if (type == s.end()) {
      if (s.contains("properties") || s.contains("additionalProperties")) return typed(s, "object", where);
      if (s.contains("items")) return typed(s, "array", where);
      for (const char* keyword : {"minItems", "maxItems", "pattern", "format", "minLength", "maxLength", "minimum",
                                  "maximum", "exclusiveMinimum", "exclusiveMaximum", "required"})
        if (s.contains(keyword)) fail(where, "'" + std::string(keyword) + "' needs a 'type'");
      return any();
    }
    if (type->is_string()) return typed(s, type->get<std::string>(), where);
    if (!type->is_array() || type->empty()) fail(where + "/type", "'type' must be a string or an array of strings");
    Node node = make(Kind::AnyOf);
    for (const json& name : *type) {
      if (!name.is_string()) fail(where + "/type", "'type' must be a string or an array of strings");
      node.alternatives.push_back(typed(s, name.get<std::string>(), where));
    }
    return add(std::move(node));
  }

  uint32_t resolve(const json& ref, const std::string& where) {
    if (!ref.is_string()) fail(where, "'$ref' must be a string");
    const std::string target = ref.get<std::string>();
    if (auto it = refs_.find(target); it != refs_.end()) return it->second;
    json::json_pointer pointer;
    try {
      if (target.rfind("#/$defs/", 0) != 0 && target.rfind("#/definitions/", 0) != 0) throw std::exception();
      pointer = json::json_pointer(target.substr(1));
    } catch (...) {
      fail(where, "'$ref' \"" + target + "\" must point into #/$defs or #/definitions");
    }
    if (!root_.contains(pointer)) fail(where, "'$ref' \"" + target + "\" does not exist");
    // Reserved before compiling, so a recursive definition refers to itself.
    const uint32_t index = add({});
    refs_[target] = index;
    const uint32_t body = compile(root_.at(pointer), target);
    out_->nodes_[index] = out_->nodes_[body];
    return index;
  }

  uint32_t literal(const std::vector<json>& values, const std::string& where) {
    if (values.size() > kMaxLiterals) fail(where, "'enum' has more than 64 values");
    Node node = make(Kind::Literal);
    for (const json& value : values) node.literals.push_back(value.dump(-1, ' ', false, json::error_handler_t::strict));
    return add(std::move(node));
  }

  static uint32_t count(const json& s, const char* keyword, const std::string& where, uint32_t otherwise) {
    auto it = s.find(keyword);
    if (it == s.end()) return otherwise;
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > int64_t(UINT32_MAX - 1))
      fail(where + "/" + keyword, "'" + std::string(keyword) + "' must be a non-negative integer");
    return uint32_t(it->get<int64_t>());
  }

  // The keywords of one type; those of other types are refused, so a typo'd schema is not silently loose.
  uint32_t typed(const json& s, const std::string& type, const std::string& where) {
    static const std::map<std::string, std::set<std::string>> own = {
        {"object", {"properties", "required", "additionalProperties"}},
        {"array", {"items", "minItems", "maxItems"}},
        {"string", {"pattern", "format", "minLength", "maxLength"}},
        {"number", {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}},
        {"integer", {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}},
        {"boolean", {}},
        {"null", {}}};
    auto kind = own.find(type);
    if (kind == own.end()) fail(where + "/type", "unsupported type '" + type + "'");
    for (const auto& [keyword, value] : s.items()) {
      bool other_type = false;
      for (const auto& [name, keywords] : own) other_type |= name != type && keywords.count(keyword);
      if (other_type && !kind->second.count(keyword) && !(s.contains("type") && s.at("type").is_array()))
        fail(where, "'" + keyword + "' does not apply to type '" + type + "'");
    }
    if (type == "boolean") return literal({true, false}, where);
    if (type == "null") return literal({nullptr}, where);
    if (type == "object") return object(s, where);
    if (type == "array") {
      Node node = make(Kind::Array);
      node.min_items = count(s, "minItems", where, 0);
      node.max_items = count(s, "maxItems", where, UINT32_MAX);
      if (node.min_items > node.max_items) fail(where + "/minItems", "'minItems' is larger than 'maxItems'");
      node.items = s.contains("items") ? compile(s.at("items"), where + "/items") : any();
      return add(std::move(node));
    }
    if (type == "string") return string(s, where);
    return number(s, type == "integer", where);
  }

  uint32_t object(const json& s, const std::string& where) {
    Node node = make(Kind::Object);
    auto properties = s.find("properties");
    if (properties != s.end() && !properties->is_object())
      fail(where + "/properties", "'properties' must be an object");
    std::set<std::string> required;
    if (auto it = s.find("required"); it != s.end()) {
      if (!it->is_array()) fail(where + "/required", "'required' must be an array of strings");
      for (const json& name : *it) {
        if (!name.is_string()) fail(where + "/required", "'required' must be an array of strings");
        if (properties == s.end() || !properties->contains(name.get<std::string>()))
          fail(where + "/required", "required property '" + name.get<std::string>() + "' is not in 'properties'");
        required.insert(name.get<std::string>());
      }
    }
    json additional = s.contains("additionalProperties") ? s.at("additionalProperties") : json(true);
    if (!additional.is_boolean() && !additional.is_object())
      fail(where + "/additionalProperties", "'additionalProperties' must be a boolean or a schema");
    if (properties != s.end() && !properties->empty()) {
      if (properties->size() > kMaxProperties) fail(where + "/properties", "more than 64 properties");
      for (const auto& [name, schema] : properties->items()) {
        Node::Property property;
        property.key = json(name).dump(-1, ' ', false, json::error_handler_t::strict);
        property.required = required.count(name) > 0;
        property.node = compile(schema, where + "/properties/" + name);
        node.properties.push_back(std::move(property));
      }
    } else if (!(additional.is_boolean() && !additional.get<bool>())) {
      node.free_keys = true;
      node.value = compile(additional, where + "/additionalProperties");
    }
    return add(std::move(node));
  }

  static std::vector<PatternItem> compile_pattern(const std::string& pattern, const std::string& where) {
    std::vector<PatternItem> items;
    size_t i = 0, end = pattern.size();
    if (i < end && pattern[i] == '^') ++i;
    if (end > i && pattern[end - 1] == '$' && (end < 2 || pattern[end - 2] != '\\')) --end;
    auto unsupported = [&](const std::string& what) {
      fail(where + "/pattern", "'pattern' uses " + what + ", which is not supported (literals, '.', [classes], "
                               "\\d \\w \\s and the quantifiers ? * + {n,m} are)");
    };
    auto class_escape = [&](char c, PatternItem& item) {
      switch (c) {
        case 'd':
          for (int d = '0'; d <= '9'; ++d) item.ascii.set(d);
          return true;
        case 'w':
          for (int d = 0; d < 128; ++d) item.ascii[d] = std::isalnum(d) || d == '_';
          return true;
        case 's':
          for (char d : {' ', '\t', '\n', '\r', '\f', '\v'}) item.ascii.set(uint8_t(d));
          return true;
      }
      return false;
    };
    auto escaped = [&](char c) -> int {
      switch (c) {
        case 'n': return '\n';
        case 't': return '\t';
        case 'r': return '\r';
      }
      if (std::isalnum(uint8_t(c))) unsupported(std::string("the escape \\") + c);
      return uint8_t(c);
    };
    while (i < end) {
      const char c = pattern[i];
      PatternItem item;
      if (uint8_t(c) >= 128) unsupported("a non-ASCII character");
      if (c == '(' || c == ')' || c == '|') unsupported(std::string("'") + c + "'");
      if (c == '^' || c == '$') unsupported("an anchor inside the pattern");
      if (c == '.') {
        item.ascii.set();
        item.ascii.reset('\n');
        item.non_ascii = true;
        ++i;
      } else if (c == '\\') {
        if (i + 1 >= end) unsupported("a trailing backslash");
        if (!class_escape(pattern[i + 1], item)) item.ascii.set(escaped(pattern[i + 1]));
        i += 2;
      } else if (c == '[') {
        ++i;
        bool negate = i < end && pattern[i] == '^';
        if (negate) ++i;
        bool first = true;
        while (i < end && (pattern[i] != ']' || first)) {
          first = false;
          int lo;
          if (pattern[i] == '\\') {
            if (i + 1 >= end) unsupported("a trailing backslash");
            if (class_escape(pattern[i + 1], item)) {
              i += 2;
              continue;
            }
            lo = escaped(pattern[i + 1]);
            i += 2;
          } else {
            if (uint8_t(pattern[i]) >= 128) unsupported("a non-ASCII character");
            lo = uint8_t(pattern[i++]);
          }
          int hi = lo;
          if (i + 1 < end && pattern[i] == '-' && pattern[i + 1] != ']') {
            hi = pattern[i + 1] == '\\' ? (i + 2 < end ? escaped(pattern[i + 2]) : -1) : uint8_t(pattern[i + 1]);
            i += pattern[i + 1] == '\\' ? 3 : 2;
            if (hi < lo || hi >= 128) fail(where + "/pattern", "'pattern' has an invalid class range");
          }
          for (int d = lo; d <= hi; ++d) item.ascii.set(d);
        }
        if (i >= end) fail(where + "/pattern", "'pattern' has an unclosed '['");
        ++i;
        if (negate) {
          item.ascii.flip();
          item.non_ascii = true;
        }
      } else if (c == '?' || c == '*' || c == '+' || c == '{') {
        unsupported("a quantifier with nothing before it");
      } else {
        item.ascii.set(uint8_t(c));
        ++i;
      }
      // Quantifier: expanded into required copies, then optional ones (or one starred).
      size_t min = 1, max = 1;
      bool unbounded = false;
      if (i < end && (pattern[i] == '?' || pattern[i] == '*' || pattern[i] == '+')) {
        min = pattern[i] == '+' ? 1 : 0;
        unbounded = pattern[i] != '?';
        ++i;
      } else if (i < end && pattern[i] == '{') {
        const size_t close = pattern.find('}', i);
        if (close == std::string::npos || close >= end) fail(where + "/pattern", "'pattern' has an unclosed '{'");
        const std::string body = pattern.substr(i + 1, close - i - 1);
        const size_t comma = body.find(',');
        auto number = [&](const std::string& text) {
          if (text.empty() || text.size() > 3 || !std::all_of(text.begin(), text.end(), ::isdigit))
            fail(where + "/pattern", "'pattern' has an invalid repetition {" + body + "}");
          return size_t(std::stoul(text));
        };
        min = number(body.substr(0, comma));
        if (comma == std::string::npos) max = min;
        else if (comma + 1 == body.size()) unbounded = true;
        else max = number(body.substr(comma + 1));
        if (!unbounded && max < min) fail(where + "/pattern", "'pattern' has a repetition {n,m} with m < n");
        i = close + 1;
      }
      if (i < end && (pattern[i] == '?' || pattern[i] == '+')) unsupported("a lazy or possessive quantifier");
      for (size_t k = 0; k < min; ++k) items.push_back(item);
      if (unbounded) {
        item.repeat = PatternItem::Star;
        items.push_back(item);
      } else {
        item.repeat = PatternItem::Optional;
        for (size_t k = min; k < max; ++k) items.push_back(item);
      }
      if (items.size() > kMaxPatternItems)
        fail(where + "/pattern", "'pattern' is too long (at most 62 characters once repetitions are expanded)");
    }
    return items;
  }

  uint32_t string(const json& s, const std::string& where) {
    Node node = make(Kind::String);
    node.min_length = count(s, "minLength", where, 0);
    node.max_length = count(s, "maxLength", where, UINT32_MAX);
    if (node.min_length > node.max_length) fail(where + "/minLength", "'minLength' is larger than 'maxLength'");
    std::string pattern;
    if (auto it = s.find("pattern"); it != s.end()) {
      if (!it->is_string()) fail(where + "/pattern", "'pattern' must be a string");
      pattern = it->get<std::string>();
    }
    if (auto it = s.find("format"); it != s.end()) {
      if (!pattern.empty()) fail(where, "'format' beside 'pattern' is not supported");
      static const std::map<std::string, std::string> shapes = {
          {"date", "[0-9]{4}-[01][0-9]-[0-3][0-9]"},
          {"time", "[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z"},
          {"date-time", "[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z"},
          {"uuid", "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"}};
      const auto shape = it->is_string() ? shapes.find(it->get<std::string>()) : shapes.end();
      if (shape == shapes.end())
        fail(where + "/format", "unsupported 'format' " + it->dump() + " (date, time, date-time and uuid are)");
      pattern = shape->second;
      node.has_pattern = true;
    }
    if (s.contains("pattern")) node.has_pattern = true;
    if (node.has_pattern) node.pattern = compile_pattern(pattern, where);
    return add(std::move(node));
  }

  uint32_t number(const json& s, bool integer, const std::string& where) {
    Node node = make(Kind::Number);
    node.integer = integer;
    // Of two bounds on one side, the tighter one (at equal values, the exclusive one).
    auto bound = [&](const char* keyword, bool lower, bool is_exclusive) {
      auto it = s.find(keyword);
      if (it == s.end()) return;
      if (!it->is_number()) fail(where + "/" + keyword, "'" + std::string(keyword) + "' must be a number");
      const long double v = it->get<double>();
      bool& has = lower ? node.has_min : node.has_max;
      long double& value = lower ? node.minimum : node.maximum;
      bool& exclusive = lower ? node.exclusive_min : node.exclusive_max;
      if (has && (lower ? v < value : v > value)) return;
      if (has && v == value && !is_exclusive) return;
      has = true;
      value = v;
      exclusive = is_exclusive;
    };
    bound("minimum", true, false);
    bound("exclusiveMinimum", true, true);
    bound("maximum", false, false);
    bound("exclusiveMaximum", false, true);
    if (integer) {  // integers between exclusive bounds are integers between inclusive ones
      if (node.has_min) node.minimum = node.exclusive_min ? std::floor(node.minimum) + 1 : std::ceil(node.minimum);
      if (node.has_max) node.maximum = node.exclusive_max ? std::ceil(node.maximum) - 1 : std::floor(node.maximum);
      node.exclusive_min = node.exclusive_max = false;
    }
    const long double limit = 1e20L;  // what kMaxNumberLength characters can spell
    if (node.has_min && node.has_max &&
        (node.minimum > node.maximum || (node.minimum == node.maximum && (node.exclusive_min || node.exclusive_max))))
      fail(where + "/minimum", "no number lies between 'minimum' and 'maximum'");
    if ((node.has_min && node.minimum > limit) || (node.has_max && node.maximum < -limit))
      fail(where + "/minimum", "bounds beyond 1e20 are not supported");
    return add(std::move(node));
  }

  const json& root_;
  JsonSchema* out_ = nullptr;
  std::optional<uint32_t> any_;
  std::map<std::string, uint32_t> refs_;
};

std::shared_ptr<const JsonSchema> JsonSchema::compile(const json& schema) { return SchemaCompiler(schema).run(); }

std::shared_ptr<const JsonSchema> JsonSchema::parse(std::string_view text) {
  json schema;
  try {
    schema = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(std::string("json_schema: not valid JSON: ") + e.what());
  }
  return compile(schema);
}

// ---------------------------------------------------------------------------------------------------
// Matching

namespace {

using Node = JsonSchema::Node;
using Kind = Node::Kind;
using Frame = JsonMatcher::Frame;
// One stack of frames, outermost first, in place: matching copies states at every trie node, so
// nothing here allocates.
struct Stack {
  uint32_t n = 0;
  Frame f[kMaxDepth];
  bool empty() const { return n == 0; }
  Frame& back() { return f[n - 1]; }
  void push_back(const Frame& frame) { f[n++] = frame; }
  void pop_back() { --n; }
  void load(const Frame* frames, uint32_t count) {
    n = count;
    std::memcpy(f, frames, count * sizeof(Frame));
  }
};

enum ObjectPhase : uint8_t { kOpen, kFirst, kKey, kFreeKey, kColon, kValue, kNext, kAfterComma };

uint64_t pattern_closure(const std::vector<PatternItem>& items, uint64_t set) {
  for (size_t i = 0; i < items.size(); ++i)
    if ((set >> i) & 1 && items[i].repeat != PatternItem::One) set |= uint64_t(1) << (i + 1);
  return set;
}

uint64_t pattern_step(const std::vector<PatternItem>& items, uint64_t set, uint32_t c) {
  uint64_t next = 0;
  for (size_t i = 0; i < items.size(); ++i)
    if ((set >> i) & 1 && items[i].matches(c))
      next |= uint64_t(1) << (items[i].repeat == PatternItem::Star ? i : i + 1);
  return pattern_closure(items, next);
}

bool pattern_allows_non_ascii(const std::vector<PatternItem>& items, uint64_t set) {
  for (size_t i = 0; i < items.size(); ++i)
    if ((set >> i) & 1 && items[i].non_ascii) return true;
  return false;
}

// A number's text so far: sign, integer digits, fraction digits, and whether it is a valid prefix of the
// grammar -?(0|[1-9][0-9]*)(\.[0-9]+)?
struct NumberText {
  bool negative = false, dot = false, valid = true;
  std::string integer, fraction;
  explicit NumberText(std::string_view t) {
    size_t i = 0;
    if (i < t.size() && t[i] == '-') negative = true, ++i;
    for (; i < t.size(); ++i) {
      const char c = t[i];
      if (c == '.') {
        if (dot || integer.empty()) {
          valid = false;
          return;
        }
        dot = true;
      } else if (c >= '0' && c <= '9') {
        if (!dot && integer == "0") {
          valid = false;
          return;
        }
        (dot ? fraction : integer) += c;
      } else {
        {
          valid = false;
          return;
        }
      }
    }
  }
  bool complete() const { return valid && !integer.empty() && (!dot || !fraction.empty()); }
};

bool within(const Node& n, long double value) {
  if (n.has_min && (n.exclusive_min ? !(value > n.minimum) : !(value >= n.minimum))) return false;
  if (n.has_max && (n.exclusive_max ? !(value < n.maximum) : !(value <= n.maximum))) return false;
  return true;
}

// Whether some completion of the prefix, within kMaxNumberLength characters, lies within the bounds.
// Magnitudes reachable from the prefix form the intervals [v*10^j, (v+1)*10^j) for j more integer digits
// (with a fraction, anything in between; an integer stops at the last whole value).
bool viable(const Node& n, const NumberText& t, size_t length) {
  if (!n.has_min && !n.has_max) return true;
  const size_t room = size_t(kMaxNumberLength) - length;
  auto fits = [&](long double lo, long double hi, bool hi_open) {  // magnitudes [lo, hi) or [lo, hi]
    long double a = t.negative ? -hi : lo, b = t.negative ? -lo : hi;
    bool a_open = t.negative && hi_open, b_open = !t.negative && hi_open;
    if (n.has_min && (b < n.minimum || (b == n.minimum && (b_open || n.exclusive_min)))) return false;
    if (n.has_max && (a > n.maximum || (a == n.maximum && (a_open || n.exclusive_max)))) return false;
    return true;
  };
  if (t.integer.empty()) return fits(0, std::pow(10.0L, (long double)room), true);
  const long double v = std::strtold(t.integer.c_str(), nullptr);
  if (t.dot) {
    const long double f = t.fraction.empty() ? 0 : std::strtold(("0." + t.fraction).c_str(), nullptr);
    return fits(v + f, v + f + std::pow(10.0L, -(long double)t.fraction.size()), true);
  }
  if (t.integer == "0") return n.integer ? fits(0, 0, false) : fits(0, 1, true);
  for (size_t j = 0; j <= room; ++j) {
    const long double scale = std::pow(10.0L, (long double)j);
    if (n.integer ? fits(v * scale, (v + 1) * scale - 1, false) : fits(v * scale, (v + 1) * scale, true)) return true;
  }
  return false;
}

bool number_done(const Node& n, const Frame& f) {
  const NumberText t(std::string_view(f.num, f.len));
  return t.complete() && within(n, std::strtold(std::string(f.num, f.len).c_str(), nullptr));
}

// Keys of an ordered object that may come next: from the next unread property through the first
// required one.
uint64_t key_candidates(const Node& n, uint32_t next) {
  uint64_t set = 0;
  for (uint32_t i = next; i < n.properties.size(); ++i) {
    set |= uint64_t(1) << i;
    if (n.properties[i].required) break;
  }
  return set;
}

bool may_close(const Node& n, uint32_t next) {
  for (uint32_t i = next; i < n.properties.size(); ++i)
    if (n.properties[i].required) return false;
  return true;
}

bool literal_done(const Node& n, const Frame& f) {
  for (size_t i = 0; i < n.literals.size(); ++i)
    if ((f.set >> i) & 1 && n.literals[i].size() == f.count) return true;
  return false;
}

class Stepper {
 public:
  Stepper(const JsonSchema& schema, std::vector<Frame>& out, std::vector<uint32_t>& ends)
      : schema_(schema), out_(out), ends_(ends) {}

  // Copies a stack only where an anyOf splits it.
  void push(const Stack& st, uint32_t node, uint8_t b) {
    if (schema_.node(node).kind != Kind::AnyOf) {
      Stack& copy = scratch(st);
      push_in_place(copy, node, b);
      return;
    }
    for (uint32_t alternative : schema_.node(node).alternatives) push(st, alternative, b);
  }

  // Feeds `b` to one stack; every surviving stack (several when an anyOf splits) goes to the output.
  void step(Stack& st, uint8_t b) {
    while (true) {
      if (st.empty()) return;  // the document is complete: nothing may follow
      Frame& f = st.back();
      const Node& n = schema_.node(f.node);
      switch (n.kind) {
        case Kind::AnyOf:  // pushed frames are never anyOf: push() splits them
          return;
        case Kind::Literal: {
          uint64_t next = 0;
          for (size_t i = 0; i < n.literals.size(); ++i)
            if ((f.set >> i) & 1 && n.literals[i].size() > f.count && uint8_t(n.literals[i][f.count]) == b)
              next |= uint64_t(1) << i;
          if (next) {
            f.set = next;
            ++f.count;
            bool longer = false;
            for (size_t i = 0; i < n.literals.size(); ++i)
              longer |= (next >> i) & 1 && n.literals[i].size() > f.count;
            if (!longer) pop(st);  // nothing can extend it: the value is over
            return emit(st);
          }
          if (!literal_done(n, f)) return;
          pop(st);
          continue;  // the byte belongs to the container
        }
        case Kind::Number: {
          if (f.len < kMaxNumberLength) {
            f.num[f.len] = char(b);
            const NumberText t(std::string_view(f.num, f.len + 1));
            if (t.valid && !(n.integer && t.dot) && viable(n, t, f.len + 1u)) {
              ++f.len;
              return emit(st);
            }
            f.num[f.len] = 0;
          }
          if (!number_done(n, f)) return;
          pop(st);
          continue;
        }
        case Kind::String:
          if (string_byte(n, f, b, st)) emit(st);
          return;
        case Kind::Array:
          return array_byte(n, st, b);
        case Kind::Object:
          return object_byte(n, st, b);
      }
    }
  }

  // Pushes a value of `node` (not an anyOf) and feeds it `b`.
  void push_in_place(Stack& st, uint32_t node, uint8_t b) {
    const Node& n = schema_.node(node);
    if (st.n >= kMaxDepth) return;
    Frame f{};
    f.node = node;
    if (n.kind == Kind::Literal) f.set = n.literals.size() == 64 ? ~uint64_t(0) : (uint64_t(1) << n.literals.size()) - 1;
    if (n.kind == Kind::String && n.has_pattern) f.set = pattern_closure(n.pattern, 1);
    st.push_back(f);
    step(st, b);
  }

 private:
  // Removes the finished top value and moves its container on.
  void pop(Stack& st) {
    st.pop_back();
    if (st.empty()) return;
    Frame& parent = st.back();
    const Node& p = schema_.node(parent.node);
    if (p.kind == Kind::Array) {
      ++parent.count;
      parent.phase = kNext;
    } else {
      parent.phase = parent.phase == kFreeKey ? kColon : kNext;
    }
  }

  // A copy of `st` to work on, from a pool (anyOf splits nest, so one scratch stack per depth of split).
  Stack& scratch(const Stack& st) {
    if (pool_used_ == pool_.size()) pool_.push_back(std::make_unique<Stack>());
    Stack& copy = *pool_[pool_used_];
    copy.load(st.f, st.n);
    ++pool_used_;
    return copy;
  }

  void emit(const Stack& st) {
    out_.insert(out_.end(), st.f, st.f + st.n);
    ends_.push_back(uint32_t(out_.size()));
  }

  void array_byte(const Node& n, Stack& st, uint8_t b) {
    Frame& f = st.back();
    switch (f.phase) {
      case kOpen:
        if (b != '[') return;
        f.phase = kFirst;
        return emit(st);
      case kFirst:
        if (b == ']') {
          if (n.min_items > 0) return;
          pop(st);
          return emit(st);
        }
        if (n.max_items == 0) return;
        f.phase = kValue;
        return push(st, n.items, b);
      case kNext:
        if (b == ',' && f.count < n.max_items) {
          f.phase = kAfterComma;
          return emit(st);
        }
        if (b == ']' && f.count >= n.min_items) {
          pop(st);
          return emit(st);
        }
        return;
      case kAfterComma:
        f.phase = kValue;
        return push(st, n.items, b);
    }
  }

  void object_byte(const Node& n, Stack& st, uint8_t b) {
    Frame& f = st.back();
    switch (f.phase) {
      case kOpen:
        if (b != '{') return;
        f.phase = kFirst;
        return emit(st);
      case kFirst:
      case kAfterComma:
        if (b == '}' && f.phase == kFirst && (n.free_keys || may_close(n, f.count))) {
          pop(st);
          return emit(st);
        }
        if (n.free_keys) {
          if (b != '"') return;
          f.phase = kFreeKey;
          Frame key{};
          key.node = schema_.free_string();
          st.push_back(key);
          return step(st, b);
        }
        f.set = key_candidates(n, f.count);
        f.aux = 0;
        f.phase = kKey;
        [[fallthrough]];
      case kKey: {
        uint64_t next = 0;
        for (size_t i = 0; i < n.properties.size(); ++i) {
          const std::string& key = n.properties[i].key;
          if ((f.set >> i) & 1 && key.size() > f.aux && uint8_t(key[f.aux]) == b) next |= uint64_t(1) << i;
        }
        if (!next) return;
        f.set = next;
        ++f.aux;
        for (uint32_t i = 0; i < n.properties.size(); ++i)
          if ((next >> i) & 1 && n.properties[i].key.size() == f.aux) {  // a quoted key ends only itself
            f.count = i + 1;
            f.aux = i;
            f.set = 0;
            f.phase = kColon;
          }
        return emit(st);
      }
      case kColon:
        if (b != ':') return;
        f.phase = kValue;
        return emit(st);
      case kValue: {  // entered on ':'; the value is pushed with its first byte, so an anyOf splits on it
        const uint32_t value = n.free_keys ? n.value : n.properties[f.aux].node;
        return push(st, value, b);
      }
      case kNext:
        if (b == ',' && (n.free_keys || key_candidates(n, f.count))) {
          f.phase = kAfterComma;
          return emit(st);
        }
        if (b == '}' && (n.free_keys || may_close(n, f.count))) {
          pop(st);
          return emit(st);
        }
        return;
    }
  }

  bool string_byte(const Node& n, Frame& f, uint8_t b, Stack& st) {
    if (f.phase == 0) {
      if (b != '"') return false;
      f.phase = 1;
      return true;
    }
    if (f.need > 0) {  // inside a multi-byte UTF-8 character
      if (b < f.lo || b > f.hi) return false;
      f.aux = (f.aux << 6) | (b & 0x3f);
      f.lo = 0x80, f.hi = 0xbf;
      if (--f.need == 0) return character(n, f, f.aux);
      return true;
    }
    if (f.esc == 1) {  // after a backslash
      static const std::string_view simple = "\"\\/bfnrt", decoded = "\"\\/\b\f\n\r\t";
      if (b == 'u') {
        f.esc = 2;
        f.aux = 0;
        return true;
      }
      const size_t at = simple.find(char(b));
      if (at == std::string_view::npos) return false;
      f.esc = 0;
      return character(n, f, uint8_t(decoded[at]));
    }
    if (f.esc >= 2) {  // \u and esc-2 hex digits so far
      int digit = b >= '0' && b <= '9' ? b - '0' : b >= 'a' && b <= 'f' ? b - 'a' + 10 : b >= 'A' && b <= 'F' ? b - 'A' + 10 : -1;
      if (digit < 0) return false;
      f.aux = (f.aux << 4) | uint32_t(digit);
      if (f.esc == 3 && f.aux >= 0xd8 && f.aux <= 0xdf) return false;  // a surrogate: never completed alone
      if (++f.esc < 6) return true;
      f.esc = 0;
      return character(n, f, f.aux);
    }
    if (b == '"') {
      if (f.count < n.min_length) return false;
      if (n.has_pattern && !((f.set >> n.pattern.size()) & 1)) return false;
      pop(st);
      return true;
    }
    const bool room = f.count < n.max_length;
    if (b == '\\') {
      if (!room || n.has_pattern) return false;
      f.esc = 1;
      return true;
    }
    if (b < 0x20) return false;
    if (b < 0x80) return character(n, f, b);
    if (!room || (n.has_pattern && !pattern_allows_non_ascii(n.pattern, f.set))) return false;
    // Lead bytes and the range of the byte after them (no overlong forms, no surrogates, <= U+10FFFF).
    f.lo = 0x80, f.hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) f.need = 1, f.aux = b & 0x1f;
    else if (b >= 0xe0 && b <= 0xef) f.need = 2, f.aux = b & 0x0f, f.lo = b == 0xe0 ? 0xa0 : 0x80, f.hi = b == 0xed ? 0x9f : 0xbf;
    else if (b >= 0xf0 && b <= 0xf4) f.need = 3, f.aux = b & 0x07, f.lo = b == 0xf0 ? 0x90 : 0x80, f.hi = b == 0xf4 ? 0x8f : 0xbf;
    else return false;
    return true;
  }

  bool character(const Node& n, Frame& f, uint32_t c) {
    if (f.count >= n.max_length) return false;
    ++f.count;
    f.aux = 0;
    if (!n.has_pattern) return true;
    f.set = pattern_step(n.pattern, f.set, c);
    return f.set != 0;
  }

  const JsonSchema& schema_;
  std::vector<Frame>& out_;
  std::vector<uint32_t>& ends_;
  static thread_local std::vector<std::unique_ptr<Stack>> pool_;
  size_t pool_used_ = 0;
};

thread_local std::vector<std::unique_ptr<Stack>> Stepper::pool_;

}  // namespace

JsonMatcher::JsonMatcher(const JsonSchema& schema) : schema_(&schema) { ends_.push_back(0); }

bool JsonMatcher::feed(uint8_t byte) {
  thread_local std::vector<Frame> out;
  thread_local std::vector<uint32_t> ends;
  thread_local Stack st;
  out.clear();
  ends.clear();
  Stepper stepper(*schema_, out, ends);
  if (!started_) {
    st.n = 0;
    stepper.push(st, schema_->root(), byte);
  } else {
    uint32_t begin = 0;
    for (uint32_t end : ends_) {
      st.load(frames_.data() + begin, end - begin);
      stepper.step(st, byte);
      begin = end;
    }
  }
  if (ends.empty()) return false;
  started_ = true;
  // Alternatives that have converged on the same state are one.
  frames_.clear();
  ends_.clear();
  uint32_t from = 0;
  for (uint32_t end : ends) {
    bool duplicate = false;
    uint32_t seen_from = 0;
    for (uint32_t seen_end : ends_) {
      if (seen_end - seen_from == end - from &&
          std::memcmp(frames_.data() + seen_from, out.data() + from, (end - from) * sizeof(Frame)) == 0)
        duplicate = true;
      seen_from = seen_end;
    }
    if (!duplicate) {
      frames_.insert(frames_.end(), out.begin() + from, out.begin() + end);
      ends_.push_back(uint32_t(frames_.size()));
    }
    from = end;
  }
  return true;
}

bool JsonMatcher::feed(std::string_view bytes) {
  for (char c : bytes)
    if (!feed(uint8_t(c))) return false;
  return true;
}

bool JsonMatcher::complete() const {
  if (!started_) return false;
  uint32_t begin = 0;
  for (uint32_t end : ends_) {
    if (end == begin) return true;
    if (end - begin == 1) {
      const Frame& f = frames_[begin];
      const Node& n = schema_->node(f.node);
      if (n.kind == Kind::Number && number_done(n, f)) return true;
      if (n.kind == Kind::Literal && literal_done(n, f)) return true;
    }
    begin = end;
  }
  return false;
}

std::string JsonMatcher::key() const {
  std::string key(reinterpret_cast<const char*>(frames_.data()), frames_.size() * sizeof(Frame));
  key.append(reinterpret_cast<const char*>(ends_.data()), ends_.size() * sizeof(uint32_t));
  key += started_ ? '1' : '0';
  return key;
}

std::optional<JsonMatcher::StringText> JsonMatcher::string_text() const {
  if (!started_ || ends_.size() != 1 || frames_.empty()) return std::nullopt;
  const Frame& f = frames_.back();
  const Node& n = schema_->node(f.node);
  if (n.kind != Kind::String || n.has_pattern || f.phase != 1) return std::nullopt;
  const bool between = f.need == 0 && f.esc == 0;
  return StringText{f.count + (between ? 0u : 1u), n.max_length, between};
}

// ---------------------------------------------------------------------------------------------------
// The vocabulary trie and masks

TokenTrie::Trie::Trie(const std::vector<std::string_view>& token_bytes, std::vector<int32_t> ids) {
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return token_bytes[a] < token_bytes[b]; });
  // Breadth-first: a node covers a range of the sorted ids sharing its prefix; those of exactly its depth
  // end there (they sort first).
  struct Pending {
    uint32_t node, begin, end, depth;
  };
  nodes.push_back({});
  edge_byte.push_back(0);
  std::vector<Pending> queue{{0, 0, uint32_t(ids.size()), 0}};
  for (size_t q = 0; q < queue.size(); ++q) {
    const Pending p = queue[q];
    uint32_t i = p.begin;
    nodes[p.node].first_token = uint32_t(tokens.size());
    while (i < p.end && token_bytes[ids[i]].size() == p.depth) tokens.push_back(ids[i++]);
    nodes[p.node].token_count = uint32_t(tokens.size()) - nodes[p.node].first_token;
    nodes[p.node].first_child = uint32_t(nodes.size());
    while (i < p.end) {
      const uint8_t byte = uint8_t(token_bytes[ids[i]][p.depth]);
      uint32_t j = i;
      while (j < p.end && uint8_t(token_bytes[ids[j]][p.depth]) == byte) ++j;
      queue.push_back({uint32_t(nodes.size()), i, j, p.depth + 1});
      nodes.push_back({});
      edge_byte.push_back(byte);
      ++nodes[p.node].child_count;
      i = j;
    }
  }
}

namespace {

std::vector<int32_t> token_ids(const std::vector<std::string_view>& token_bytes, std::span<const int32_t> excluded) {
  std::vector<bool> skip(token_bytes.size());
  for (int32_t id : excluded)
    if (id >= 0 && size_t(id) < skip.size()) skip[size_t(id)] = true;
  std::vector<int32_t> ids;
  for (size_t id = 0; id < token_bytes.size(); ++id)
    if (!token_bytes[id].empty() && !skip[id]) ids.push_back(int32_t(id));
  return ids;
}

// Plain text, as the matcher itself reads it: a token fed inside an open string of the free string schema
// that leaves it there. Returns the characters it begins, or nullopt when it is not plain text.
class PlainText {
 public:
  PlainText() : schema_(JsonSchema::parse(R"({"type":"string"})")), open_(*schema_), reader_(open_) {
    open_.feed('"');
  }
  std::optional<uint32_t> characters(std::string_view bytes) {
    reader_ = open_;  // an assignment, not a copy: the vocabulary is read without an allocation per token
    if (!reader_.feed(bytes)) return std::nullopt;
    const auto inside = reader_.string_text();
    return inside ? std::optional(inside->begun) : std::nullopt;
  }

 private:
  std::shared_ptr<const JsonSchema> schema_;
  JsonMatcher open_, reader_;
};

}  // namespace

TokenTrie::TokenTrie(const std::vector<std::string_view>& token_bytes, std::span<const int32_t> excluded)
    : all_(token_bytes, token_ids(token_bytes, excluded)), not_plain_(token_bytes, {}), vocab_size_(token_bytes.size()) {
  PlainText plain_text;
  std::vector<int32_t> not_plain;
  std::vector<std::pair<uint32_t, int32_t>> plain;  // (characters, id)
  for (int32_t id : all_.tokens) {
    if (const auto characters = plain_text.characters(token_bytes[size_t(id)]))
      plain.emplace_back(*characters, id);
    else
      not_plain.push_back(id);
  }
  not_plain_ = Trie(token_bytes, std::move(not_plain));
  std::sort(plain.begin(), plain.end());
  plain_within_.assign(plain.empty() ? 1 : plain.back().first + 1, 0);
  for (const auto& [characters, id] : plain) {
    plain_.push_back(id);
    ++plain_within_[characters];
  }
  std::partial_sum(plain_within_.begin(), plain_within_.end(), plain_within_.begin());
}

JsonConstraint::JsonConstraint(std::shared_ptr<const JsonSchema> schema, std::shared_ptr<const TokenTrie> trie)
    : schema_(std::move(schema)), trie_(std::move(trie)) {}

void JsonConstraint::walk(const TokenTrie::Trie& trie, uint32_t node, size_t depth, std::vector<JsonMatcher>& levels,
                          Mask& mask) const {
  const TokenTrie::Trie::Node& n = trie.nodes[node];
  for (uint32_t t = 0; t < n.token_count; ++t) {
    const int32_t id = trie.tokens[n.first_token + t];
    mask.bits[size_t(id) >> 6] |= uint64_t(1) << (id & 63);
    ++mask.allowed;
  }
  if (levels.size() <= depth + 1) levels.push_back(levels[depth]);
  for (uint32_t c = 0; c < n.child_count; ++c) {
    const uint32_t child = n.first_child + c;
    levels[depth + 1] = levels[depth];
    if (levels[depth + 1].feed(trie.edge_byte[child])) walk(trie, child, depth + 1, levels, mask);
  }
}

std::shared_ptr<const JsonConstraint::Mask> JsonConstraint::allowed(const JsonMatcher& state) const {
  const std::string key = state.key();
  {
    std::lock_guard lock(mutex_);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
  }
  auto mask = std::make_shared<Mask>();
  mask->bits.assign((trie_->vocab_size() + 63) / 64, 0);
  std::vector<JsonMatcher> levels{state};
  levels.reserve(64);
  const auto text = state.string_text();
  if (text && text->between_characters) {
    // Plain-text tokens by their character count alone (fewest first); the others are walked.
    const std::vector<uint32_t>& within = trie_->plain_within_;
    const size_t fit = within[std::min<size_t>(text->max_length - text->begun, within.size() - 1)];
    for (size_t i = 0; i < fit; ++i) {
      const int32_t id = trie_->plain_[i];
      mask->bits[size_t(id) >> 6] |= uint64_t(1) << (id & 63);
    }
    mask->allowed += fit;
    walk(trie_->not_plain_, 0, 0, levels, *mask);
  } else {
    walk(trie_->all_, 0, 0, levels, *mask);
  }
  std::lock_guard lock(mutex_);
  // Bounded: a schema whose states never repeat (long numbers, patterns) recomputes rather than grows.
  if (cache_.size() < 4096) cache_.emplace(key, mask);
  return mask;
}

}  // namespace fastvlm::text
