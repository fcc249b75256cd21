// What structured output costs the sampler per generated token: the token masks of a JSON Schema over the
// Qwen2 vocabulary, replayed along a receipt document tokenized as the model would write it. "First" is a
// request with a schema not seen before (every mask computed), "Warm" the same schema again (every mask
// from the cache); "VocabularyTrie" is built once per engine, at its first schema. Single-threaded CPU time,
// so it can be read against decode ms/token (bench/schema_cost.sh measures the whole server).
// The tokenizer comes from FASTVLM_TOKENIZER_DIR, else the qwen2-tokenizer fixture beside the checkout.
//   build/bin/bench_json_schema
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "text/json_schema.h"
#include "text/tokenizer.h"

namespace {

using namespace fastvlm::text;

const Tokenizer& tokenizer() {
  static const std::unique_ptr<Tokenizer> loaded = [] {
    const char* dir = std::getenv("FASTVLM_TOKENIZER_DIR");
    return Tokenizer::load(dir ? std::filesystem::path(dir)
                               : std::filesystem::path(__FILE__).parent_path() / "../../shared/fixtures/qwen2-tokenizer");
  }();
  return *loaded;
}

std::vector<std::string_view> vocabulary() {
  std::vector<std::string_view> bytes(tokenizer().vocab_size());
  for (size_t id = 0; id < bytes.size(); ++id) bytes[id] = tokenizer().token_bytes(int32_t(id));
  return bytes;
}

const std::shared_ptr<const TokenTrie>& trie() {
  static const auto built = std::make_shared<const TokenTrie>(vocabulary(), std::span<const int32_t>{});
  return built;
}

// The schema of bench/schema_cost.sh and a document it accepts: strings (English, accented, CJK), numbers,
// a date, an enum.
constexpr const char* kSchema = R"({"type":"object","additionalProperties":false,
  "required":["store","date","items","total","paid"],
  "properties":{"store":{"type":"string","minLength":10,"maxLength":60},"date":{"type":"string","format":"date"},
    "items":{"type":"array","minItems":4,"maxItems":8,"items":{"type":"object","additionalProperties":false,
      "required":["name","price"],"properties":{"name":{"type":"string","minLength":3,"maxLength":30},
        "price":{"type":"number","minimum":0,"maximum":10000}}}},
    "total":{"type":"integer","minimum":0,"maximum":100000},"paid":{"enum":["cash","card","other"]}}})";
constexpr const char* kDocument =
    R"({"store":"Café Müller, Hauptstraße 12","date":"2024-05-17","items":[{"name":"Cappuccino grande",)"
    R"("price":4.5},{"name":"Croissant au beurre","price":2.9},{"name":"抹茶ラテ","price":5.25},)"
    R"({"name":"Mineral water, still","price":1.8}],"total":15,"paid":"card"})";

// Every mask along the document, checking that each token of it is allowed.
void replay(const JsonConstraint& constraint, const std::vector<int32_t>& ids, benchmark::State& state) {
  JsonMatcher matcher = constraint.start();
  for (int32_t id : ids) {
    if (!constraint.allowed(matcher)->test(id) || !matcher.feed(tokenizer().token_bytes(id))) {
      state.SkipWithError("the document's tokens are not all allowed");
      return;
    }
  }
}

void report(benchmark::State& state, size_t tokens) {
  state.SetItemsProcessed(int64_t(state.iterations() * tokens));
  state.counters["tokens"] = double(tokens);
}

void BM_SchemaMasksFirst(benchmark::State& state) {
  const auto schema = JsonSchema::parse(kSchema);
  const std::vector<int32_t> ids = tokenizer().encode(kDocument);
  trie();
  for (auto _ : state) {
    const JsonConstraint constraint(schema, trie());  // an empty mask cache
    replay(constraint, ids, state);
  }
  report(state, ids.size());
}
BENCHMARK(BM_SchemaMasksFirst)->Unit(benchmark::kMillisecond);

void BM_SchemaMasksWarm(benchmark::State& state) {
  const JsonConstraint constraint(JsonSchema::parse(kSchema), trie());
  const std::vector<int32_t> ids = tokenizer().encode(kDocument);
  replay(constraint, ids, state);
  for (auto _ : state) replay(constraint, ids, state);
  report(state, ids.size());
}
BENCHMARK(BM_SchemaMasksWarm)->Unit(benchmark::kMillisecond);

void BM_VocabularyTrie(benchmark::State& state) {
  const std::vector<std::string_view> bytes = vocabulary();
  for (auto _ : state) benchmark::DoNotOptimize(TokenTrie(bytes, {}));
}
BENCHMARK(BM_VocabularyTrie)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
