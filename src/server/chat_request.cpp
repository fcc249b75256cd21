#include "server/chat_request.h"

#include <nlohmann/json.hpp>
#include <random>

#include "server/api_error.h"
#include "core/error.h"
#include "server/base64.h"
#include "text/json_schema.h"

namespace fastvlm::server {
namespace {

// Ordered, so that a JSON schema keeps its properties in the order the client wrote them.
using json = nlohmann::ordered_json;

// Deeper JSON than any chat request needs is refused while parsing, so a hostile body cannot exhaust
// the stack of code that walks it.
constexpr int kMaxJsonDepth = 32;
constexpr size_t kMaxStopStrings = 16;

json parse_json(std::string_view body) {
  json::parser_callback_t limit_depth = [](int depth, json::parse_event_t, json&) {
    if (depth > kMaxJsonDepth)
      throw invalid_request("invalid_json", "request body nests deeper than " + std::to_string(kMaxJsonDepth) +
                                                " levels");
    return true;
  };
  try {
    return json::parse(body, limit_depth);
  } catch (const json::exception& e) {
    throw invalid_request("invalid_json", std::string("request body is not valid JSON: ") + e.what());
  }
}

// Typed access to optional fields, each failure naming the field and the type it should have.
const json* field(const json& object, const char* name) {
  auto it = object.find(name);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

[[noreturn]] void wrong_type(const std::string& where, const char* expected) {
  throw invalid_request("invalid_type", "'" + where + "' must be " + expected);
}

double number_field(const json& value, const std::string& where, double min, double max) {
  if (!value.is_number()) wrong_type(where, "a number");
  double number = value.get<double>();
  if (!(number >= min && number <= max))
    throw invalid_request("invalid_value", "'" + where + "' must be between " + std::to_string(min) + " and " +
                                               std::to_string(max) + ", got " + value.dump());
  return number;
}

int64_t integer_field(const json& value, const std::string& where, int64_t min, int64_t max) {
  if (!value.is_number_integer()) wrong_type(where, "an integer");
  const bool in_range = value.is_number_unsigned()
                            ? value.get<uint64_t>() <= uint64_t(max) && (min <= 0 || value.get<uint64_t>() >= uint64_t(min))
                            : value.get<int64_t>() >= min && value.get<int64_t>() <= max;
  if (!in_range)
    throw invalid_request("invalid_value", "'" + where + "' must be between " + std::to_string(min) + " and " +
                                               std::to_string(max) + ", got " + value.dump());
  return value.is_number_unsigned() ? int64_t(value.get<uint64_t>()) : value.get<int64_t>();
}

bool bool_field(const json& value, const std::string& where) {
  if (!value.is_boolean()) wrong_type(where, "true or false");
  return value.get<bool>();
}

const std::string& string_field(const json& value, const std::string& where) {
  if (!value.is_string()) wrong_type(where, "a string");
  return value.get_ref<const std::string&>();
}

ImageInput image_from_data_url(std::string_view url, const std::string& where) {
  // data:[<media type>][;<parameter>]*;base64,<data>
  const size_t comma = url.find(',');
  if (comma == std::string_view::npos)
    throw invalid_request("invalid_image_url", "'" + where + "' is a data URL without a ',' before its data");
  std::string_view header = url.substr(5, comma - 5);
  if (header.size() < 7 || header.substr(header.size() - 7) != ";base64")
    throw invalid_request("invalid_image_url", "'" + where + "' must be a base64 data URL (data:image/...;base64,...)");
  std::string_view media_type = header.substr(0, header.find(';'));
  if (!media_type.empty() && media_type.substr(0, 6) != "image/")
    throw invalid_request("invalid_image_url",
                          "'" + where + "' has media type '" + std::string(media_type) + "', not an image type");
  auto bytes = decode_base64(url.substr(comma + 1));
  if (!bytes) throw invalid_request("invalid_base64", "'" + where + "' does not hold valid base64 data");
  if (bytes->empty()) throw invalid_request("invalid_image", "'" + where + "' holds an empty image");
  return ImageInput::memory(std::move(*bytes));
}

ImageInput image_from_local_path(std::string_view url, const std::string& where, const RequestPolicy& policy) {
  if (!policy.allowed_image_dir)
    throw invalid_request("image_path_not_allowed", "'" + where +
                                                        "': local image paths are disabled (the server must be "
                                                        "started with --allowed-image-dir)");
  namespace fs = std::filesystem;
  std::string_view path_text = url.substr(0, 7) == "file://" ? url.substr(7) : url;
  auto is_under = [](const fs::path& path, const fs::path& directory) {
    const fs::path relative = path.lexically_relative(directory);
    return !relative.empty() && *relative.begin() != "..";
  };
  auto is_inside = [&](const fs::path& path) { return is_under(path, policy.allowed_image_dir->canonical); };
  // Whether the file exists is looked at only inside the allowed directory: outside it every path gets
  // the same answer, so a client cannot probe the server's file system. The check is made on the path
  // as written (under either spelling of the directory) and again with the symlinks of its existing part
  // resolved (weakly_canonical), so neither ".." nor a link can walk out; a component that cannot be
  // resolved counts as outside.
  std::error_code error;
  const fs::path written = fs::absolute(fs::path(path_text), error).lexically_normal();
  const fs::path resolved = error ? fs::path() : fs::weakly_canonical(written, error);
  const bool written_inside = is_inside(written) || is_under(written, policy.allowed_image_dir->as_written);
  if (error || !written_inside || !is_inside(resolved))
    throw invalid_request("image_path_not_allowed",
                          "'" + where + "': '" + std::string(path_text) + "' is outside the allowed image directory");
  const fs::path path = fs::canonical(resolved, error);
  if (error || !is_inside(path))
    throw invalid_request("invalid_image", "'" + where + "': cannot open '" + std::string(path_text) + "'");
  return ImageInput::file(path.string());
}

ImageInput image_from_url(std::string_view url, const std::string& where, const RequestPolicy& policy) {
  if (url.substr(0, 5) == "data:") return image_from_data_url(url, where);
  if (url.substr(0, 7) == "http://" || url.substr(0, 8) == "https://")
    throw invalid_request("remote_image_not_allowed",
                          "'" + where + "': remote image URLs are not fetched; send the image as a data URL");
  if (url.substr(0, 7) == "file://" || url.substr(0, 1) == "/") return image_from_local_path(url, where, policy);
  throw invalid_request("invalid_image_url", "'" + where + "' must be a data: URL or a local file path");
}

// One message's content: a string, or parts of type "text" (joined by newlines) and at most one
// "image_url" (FastVLM sees one image per message, placed before the text).
void parse_content(const json& content, ChatMessage& message, const std::string& where, const RequestPolicy& policy) {
  if (content.is_string()) {
    message.text = content.get<std::string>();
    return;
  }
  if (!content.is_array()) wrong_type(where, "a string or an array of content parts");
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string part_where = where + "[" + std::to_string(i) + "]";
    if (!part.is_object()) wrong_type(part_where, "an object");
    const json* type = field(part, "type");
    if (!type) throw invalid_request("missing_field", "'" + part_where + ".type' is required");
    const std::string& kind = string_field(*type, part_where + ".type");
    if (kind == "text") {
      const json* text = field(part, "text");
      if (!text) throw invalid_request("missing_field", "'" + part_where + ".text' is required");
      if (!message.text.empty()) message.text += '\n';
      message.text += string_field(*text, part_where + ".text");
    } else if (kind == "image_url") {
      if (message.image)
        throw invalid_request("too_many_images", "'" + where + "' has more than one image; send one per message");
      const json* image_url = field(part, "image_url");
      if (!image_url) throw invalid_request("missing_field", "'" + part_where + ".image_url' is required");
      std::string url_where = part_where + ".image_url";
      const json* url = image_url;
      if (image_url->is_object()) {
        url = field(*image_url, "url");
        url_where += ".url";
        if (!url) throw invalid_request("missing_field", "'" + url_where + "' is required");
      }
      message.image = image_from_url(string_field(*url, url_where), url_where, policy);
    } else {
      throw invalid_request("invalid_value", "'" + part_where + ".type' must be \"text\" or \"image_url\", got \"" +
                                                 kind + "\"");
    }
  }
}

std::vector<ChatMessage> parse_messages(const json& messages, const RequestPolicy& policy) {
  if (!messages.is_array() || messages.empty()) wrong_type("messages", "a non-empty array");
  std::vector<ChatMessage> conversation;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    const json& entry = messages[i];
    if (!entry.is_object()) wrong_type(where, "an object");
    const json* role = field(entry, "role");
    if (!role) throw invalid_request("missing_field", "'" + where + ".role' is required");
    ChatMessage message;
    message.role = string_field(*role, where + ".role");
    if (message.role == "developer") message.role = "system";  // OpenAI's newer name for the system role
    if (message.role != "system" && message.role != "user" && message.role != "assistant")
      throw invalid_request("invalid_value", "'" + where + ".role' must be system, user or assistant, got \"" +
                                                 message.role + "\"");
    if (const json* content = field(entry, "content")) parse_content(*content, message, where + ".content", policy);
    else if (message.role != "assistant")
      throw invalid_request("missing_field", "'" + where + ".content' is required");
    if (message.image && message.role != "user")
      throw invalid_request("invalid_value", "'" + where + "': only user messages may carry an image");
    conversation.push_back(std::move(message));
  }
  if (conversation.back().role != "user")
    throw invalid_request("invalid_value", "the last message must have role \"user\"");
  return conversation;
}

// response_format: {"type": "text" | "json_object" | "json_schema", "json_schema": {"name", "schema", "strict"}}.
// The schema is compiled here so that an unsupported keyword is a 400 before the request takes a slot.
std::string parse_response_format(const json& format) {
  if (!format.is_object()) wrong_type("response_format", "an object");
  const json* type = field(format, "type");
  if (!type) throw invalid_request("missing_field", "'response_format.type' is required");
  const std::string& kind = string_field(*type, "response_format.type");
  if (kind == "text") return "";
  if (kind == "json_object") return R"({"type":"object"})";
  if (kind != "json_schema")
    throw invalid_request("invalid_value", "'response_format.type' must be \"text\", \"json_object\" or "
                                           "\"json_schema\", got \"" + kind + "\"");
  const json* spec = field(format, "json_schema");
  if (!spec) throw invalid_request("missing_field", "'response_format.json_schema' is required");
  if (!spec->is_object()) wrong_type("response_format.json_schema", "an object");
  if (const json* name = field(*spec, "name")) string_field(*name, "response_format.json_schema.name");
  if (const json* strict = field(*spec, "strict")) bool_field(*strict, "response_format.json_schema.strict");
  const json* schema = field(*spec, "schema");
  if (!schema) throw invalid_request("missing_field", "'response_format.json_schema.schema' is required");
  try {
    text::JsonSchema::compile(*schema);
  } catch (const Error& e) {
    throw invalid_request("invalid_json_schema", std::string("'response_format.json_schema.schema': ") + e.what());
  }
  return schema->dump();
}

std::vector<std::pair<int32_t, float>> parse_logit_bias(const json& bias, const RequestPolicy& policy) {
  if (!bias.is_object()) wrong_type("logit_bias", "an object mapping token ids to numbers");
  std::vector<std::pair<int32_t, float>> result;
  for (const auto& [key, value] : bias.items()) {
    const std::string where = "logit_bias." + key;
    char* end = nullptr;
    const long id = std::strtol(key.c_str(), &end, 10);
    if (key.empty() || *end != 0 || id < 0 || id >= policy.vocab_size)
      throw invalid_request("invalid_value", "'logit_bias' key '" + key + "' must be a token id between 0 and " +
                                                 std::to_string(policy.vocab_size - 1));
    result.emplace_back(int32_t(id), float(number_field(value, where, -100, 100)));
  }
  return result;
}

std::vector<std::string> parse_stop(const json& stop) {
  if (stop.is_string()) return {stop.get<std::string>()};
  if (!stop.is_array() || stop.size() > kMaxStopStrings)
    wrong_type("stop", "a string or an array of at most 16 strings");
  std::vector<std::string> strings;
  for (size_t i = 0; i < stop.size(); ++i) strings.push_back(string_field(stop[i], "stop[" + std::to_string(i) + "]"));
  return strings;
}

}  // namespace

ChatRequest parse_chat_request(std::string_view body, const RequestPolicy& policy) {
  const json root = parse_json(body);
  if (!root.is_object()) wrong_type("the request body", "a JSON object");
  ChatRequest request;
  if (const json* model = field(root, "model")) request.model = string_field(*model, "model");
  const json* messages = field(root, "messages");
  if (!messages) throw invalid_request("missing_field", "'messages' is required");
  request.conversation = parse_messages(*messages, policy);

  GenerateOptions& generate = request.generate;
  // OpenAI's defaults: sample at temperature 1 over the whole nucleus, a fresh seed per request.
  generate.sampling.temperature = 1.0f;
  generate.sampling.top_p = 1.0f;
  generate.sampling.seed = std::random_device{}();
  generate.max_tokens = policy.default_max_tokens;
  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (const json* value = field(root, name)) generate.max_tokens = int(integer_field(*value, name, 1, 1 << 30));
  if (const json* value = field(root, "temperature")) generate.sampling.temperature = float(number_field(*value, "temperature", 0, 2));
  if (const json* value = field(root, "top_p")) generate.sampling.top_p = float(number_field(*value, "top_p", 0, 1));
  // Beyond OpenAI, as llama.cpp's server accepts them.
  if (const json* value = field(root, "top_k")) generate.sampling.top_k = int(integer_field(*value, "top_k", 0, 1 << 30));
  if (const json* value = field(root, "min_p")) generate.sampling.min_p = float(number_field(*value, "min_p", 0, 1));
  if (const json* value = field(root, "seed"))
    generate.sampling.seed = uint64_t(integer_field(*value, "seed", INT64_MIN, INT64_MAX));
  if (const json* value = field(root, "stop")) generate.stop = parse_stop(*value);
  if (const json* value = field(root, "n")) request.n = int(integer_field(*value, "n", 1, 16));
  if (const json* value = field(root, "stream")) request.stream = bool_field(*value, "stream");
  if (const json* value = field(root, "presence_penalty"))
    generate.sampling.presence_penalty = float(number_field(*value, "presence_penalty", -2, 2));
  if (const json* value = field(root, "frequency_penalty"))
    generate.sampling.frequency_penalty = float(number_field(*value, "frequency_penalty", -2, 2));
  if (const json* value = field(root, "logit_bias")) generate.sampling.logit_bias = parse_logit_bias(*value, policy);
  const json* logprobs_value = field(root, "logprobs");
  const bool logprobs = logprobs_value && bool_field(*logprobs_value, "logprobs");
  if (const json* value = field(root, "top_logprobs")) {
    const int top = int(integer_field(*value, "top_logprobs", 0, 20));
    if (!logprobs) throw invalid_request("invalid_value", "'top_logprobs' needs 'logprobs': true");
    generate.logprobs = top;
  } else if (logprobs) {
    generate.logprobs = 0;
  }
  if (const json* value = field(root, "response_format")) generate.json_schema = parse_response_format(*value);
  if (const json* options = field(root, "stream_options")) {
    if (!options->is_object()) wrong_type("stream_options", "an object");
    if (const json* value = field(*options, "include_usage"))
      request.include_usage = bool_field(*value, "stream_options.include_usage");
  }
  return request;
}

EmbeddingsRequest parse_embeddings_request(std::string_view body, const RequestPolicy& policy) {
  const json root = parse_json(body);
  if (!root.is_object()) wrong_type("the request body", "a JSON object");
  EmbeddingsRequest request;
  if (const json* model = field(root, "model")) request.model = string_field(*model, "model");
  if (const json* format = field(root, "encoding_format")) {
    const std::string& name = string_field(*format, "encoding_format");
    if (name != "float" && name != "base64")
      throw invalid_request("invalid_value", "'encoding_format' must be \"float\" or \"base64\", got \"" + name + "\"");
    request.base64 = name == "base64";
  }
  if (const json* pooling = field(root, "pooling")) {
    const std::string& name = string_field(*pooling, "pooling");
    if (name != "mean" && name != "none")
      throw invalid_request("invalid_value", "'pooling' must be \"mean\" or \"none\", got \"" + name + "\"");
    request.every_token = name == "none";
  }
  const json* input = field(root, "input");
  if (!input) throw invalid_request("missing_field", "'input' is required");
  const json inputs = input->is_array() ? *input : json::array({*input});
  if (inputs.empty() || inputs.size() > 64) wrong_type("input", "a string or an array of 1 to 64 inputs");
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string where = input->is_array() ? "input[" + std::to_string(i) + "]" : "input";
    const json& item = inputs[i];
    EmbeddingsRequest::Input entry;
    if (item.is_string()) {
      const std::string& text = item.get_ref<const std::string&>();
      if (text.rfind("data:image/", 0) == 0) entry.image = image_from_url(text, where, policy);
      else entry.text = text;
    } else if (item.is_object()) {
      ChatMessage part;
      parse_content(json::array({item}), part, where, policy);
      entry.text = std::move(part.text);
      entry.image = std::move(part.image);
    } else {
      wrong_type(where, "a string or a content part ({\"type\": \"text\"} or {\"type\": \"image_url\"})");
    }
    if (!entry.image && entry.text.empty()) throw invalid_request("invalid_value", "'" + where + "' is empty");
    request.inputs.push_back(std::move(entry));
  }
  return request;
}

TokenizeRequest parse_tokenize_request(std::string_view body) {
  const json root = parse_json(body);
  if (!root.is_object()) wrong_type("the request body", "a JSON object");
  TokenizeRequest request;
  const json* content = field(root, "content");
  if (!content) throw invalid_request("missing_field", "'content' is required");
  request.content = string_field(*content, "content");
  if (const json* pieces = field(root, "with_pieces")) request.with_pieces = bool_field(*pieces, "with_pieces");
  return request;
}

std::vector<int32_t> parse_detokenize_request(std::string_view body, const RequestPolicy& policy) {
  const json root = parse_json(body);
  if (!root.is_object()) wrong_type("the request body", "a JSON object");
  const json* tokens = field(root, "tokens");
  if (!tokens) throw invalid_request("missing_field", "'tokens' is required");
  if (!tokens->is_array()) wrong_type("tokens", "an array of token ids");
  std::vector<int32_t> ids;
  for (size_t i = 0; i < tokens->size(); ++i)
    ids.push_back(int32_t(integer_field((*tokens)[i], "tokens[" + std::to_string(i) + "]", 0, policy.vocab_size - 1)));
  return ids;
}

}  // namespace fastvlm::server
