// Batched decode (TextDecoder::forward_batch): sequences of different lengths advanced together give the
// logits and greedy tokens each gives alone, for every family and weight storage (f32, bf16, Q8_0, Q4_0);
// so does a prompt prefilled in chunks that ride along in those steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include "core/error.h"
#include "llm/kv_cache.h"
#include "models/quantize.h"
#include "models/registry.h"

namespace fs = std::filesystem;
using namespace fastvlm;

namespace {

const fs::path kFixtures = fs::path(FASTVLM_SHARED_DIR) / "fixtures";

int argmax(const float* logits, int n) { return int(std::max_element(logits, logits + n) - logits); }

struct BatchCase {
  const char* model;
  Precision precision;
  const char* quantized = nullptr;  // "q8_0" / "q4_0": the fixture quantised by `fastvlm quantize` first
};

// The fixture `model` quantised to `type` and loaded; the temp dir is removed again (the weights are in
// memory or stay mapped after the unlink).
std::unique_ptr<Model> load_quantized_fixture(const char* model, const std::string& type, const ModelLoadOptions& options) {
  const fs::path out = fs::temp_directory_path() /
                       ("fastvlm-batched-decode-" + std::to_string(::getpid()) + "-" + model + "-" + type);
  quantize_model(kFixtures / model, out, type == "q8_0" ? WeightType::Q8_0 : WeightType::Q4_0);
  std::unique_ptr<Model> loaded = load_model(out, options);
  fs::remove_all(out);
  return loaded;
}

// Largest |a - b| over the largest |a|.
float relative_difference(const float* a, const float* b, int n) {
  float scale = 0, worst = 0;
  for (int i = 0; i < n; ++i) {
    scale = std::max(scale, std::abs(a[i]));
    worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst / scale;
}

class BatchedDecode : public testing::TestWithParam<BatchCase> {
 protected:
  void SetUp() override {
    ModelLoadOptions options;
    options.precision = GetParam().precision;
    try {
      model_ = GetParam().quantized ? load_quantized_fixture(GetParam().model, GetParam().quantized, options)
                                    : load_model(kFixtures / GetParam().model, options);
    } catch (const Error& e) {
      GTEST_SKIP() << e.what();  // bf16 on a CPU without it
    }
  }
  // The same products over another number of rows are equal up to summation order: exact-ish at f32, within
  // the rounding of bf16 or quantised activations otherwise.
  float tolerance() const { return GetParam().precision == Precision::F32 && !GetParam().quantized ? 1e-4f : 2e-2f; }

  std::unique_ptr<Model> model_;
};

TEST_P(BatchedDecode, EverySequenceDecodesAsItWouldAlone) {
  const TextDecoder& decoder = *model_->decoder;
  const TextConfig& config = decoder.config();
  const int hidden = config.hidden_size, vocab = config.vocab_size, steps = 6;
  // Five prompts of different lengths (the batch is past the few-row GEMV path), prefilled alone.
  const std::vector<std::vector<int32_t>> prompts = {
      {785, 6722, 315, 9625, 374}, {9707}, {32174, 53, 10994, 3209, 2539, 264, 220, 16}, {7985, 264}, {1, 2, 3}};
  const int batch = int(prompts.size());
  std::vector<KVCache> alone, together;
  std::vector<int32_t> next_alone, next_together;
  for (const auto& prompt : prompts) {
    std::vector<float> embeds(prompt.size() * hidden);
    decoder.embed(prompt, embeds.data());
    for (auto* caches : {&alone, &together}) {
      caches->emplace_back(config, 64);
      const std::vector<float> logits = decoder.forward(embeds.data(), int(prompt.size()), caches->back());
      (caches == &alone ? next_alone : next_together).push_back(argmax(logits.data(), vocab));
    }
  }
  std::vector<KVCache*> batch_caches;
  for (KVCache& cache : together) batch_caches.push_back(&cache);

  for (int step = 0; step < steps; ++step) {
    std::vector<float> embeds(size_t(batch) * hidden);
    decoder.embed(next_together, embeds.data());
    const std::vector<float> batched = decoder.forward_batch(embeds.data(), batch_caches);
    ASSERT_EQ(batched.size(), size_t(batch) * vocab);
    for (int b = 0; b < batch; ++b) {
      std::vector<float> embedding(hidden);
      decoder.embed(std::span(&next_alone[b], 1), embedding.data());
      const std::vector<float> single = decoder.forward(embedding.data(), 1, alone[b]);
      EXPECT_LE(relative_difference(single.data(), batched.data() + size_t(b) * vocab, vocab), tolerance())
          << "sequence " << b << " step " << step;
      next_alone[b] = argmax(single.data(), vocab);
      next_together[b] = argmax(batched.data() + size_t(b) * vocab, vocab);
      EXPECT_EQ(next_together[b], next_alone[b]) << "sequence " << b << " step " << step;
      EXPECT_EQ(together[b].size(), alone[b].size());
    }
  }
}

TEST_P(BatchedDecode, APromptPrefilledInChunksRidingAlongDecodeStepsMatchesItsPrefillAlone) {
  const TextDecoder& decoder = *model_->decoder;
  const TextConfig& config = decoder.config();
  const int hidden = config.hidden_size, vocab = config.vocab_size;
  // Two decoding sequences, and an 8-position prompt that joins in chunks of 3, 3 and 2.
  const std::vector<std::vector<int32_t>> decoding = {{785, 6722, 315}, {9707, 11}};
  const std::vector<int32_t> prompt = {32174, 53, 10994, 3209, 2539, 264, 220, 16};
  std::vector<KVCache> alone, together;
  std::vector<int32_t> next;
  for (const auto& ids : decoding) {
    std::vector<float> embeds(ids.size() * hidden);
    decoder.embed(ids, embeds.data());
    for (auto* caches : {&alone, &together}) {
      caches->emplace_back(config, 64);
      const std::vector<float> logits = decoder.forward(embeds.data(), int(ids.size()), caches->back());
      if (caches == &alone) next.push_back(argmax(logits.data(), vocab));
    }
  }
  std::vector<float> prompt_embeds(prompt.size() * hidden);
  decoder.embed(prompt, prompt_embeds.data());
  KVCache prompt_alone(config, 64), prompt_together(config, 64);
  const std::vector<float> whole = decoder.forward(prompt_embeds.data(), int(prompt.size()), prompt_alone);

  std::vector<float> last_chunk_logits;
  int done = 0;
  for (const int chunk : {3, 3, 2}) {
    std::vector<float> embeds((decoding.size() + size_t(chunk)) * hidden);
    decoder.embed(next, embeds.data());
    std::copy_n(prompt_embeds.data() + size_t(done) * hidden, size_t(chunk) * hidden,
                embeds.data() + decoding.size() * hidden);
    std::vector<KVCache*> caches = {&together[0], &together[1], &prompt_together};
    const std::vector<int> counts = {1, 1, chunk};
    const std::vector<float> logits = decoder.forward_batch(embeds.data(), caches, counts);
    ASSERT_EQ(logits.size(), 3 * size_t(vocab));
    done += chunk;
    for (size_t b = 0; b < decoding.size(); ++b) {
      std::vector<float> embedding(hidden);
      decoder.embed(std::span(&next[b], 1), embedding.data());
      const std::vector<float> single = decoder.forward(embedding.data(), 1, alone[b]);
      EXPECT_LE(relative_difference(single.data(), logits.data() + b * vocab, vocab), tolerance()) << "sequence " << b;
      EXPECT_EQ(argmax(logits.data() + b * vocab, vocab), argmax(single.data(), vocab)) << "sequence " << b;
      next[b] = argmax(single.data(), vocab);
      EXPECT_EQ(together[b].size(), alone[b].size());
    }
    EXPECT_EQ(prompt_together.size(), done);
    last_chunk_logits.assign(logits.begin() + 2 * vocab, logits.end());
  }
  // The last chunk's logits are those of the prompt's last position, as the whole prefill gives them.
  EXPECT_LE(relative_difference(whole.data(), last_chunk_logits.data(), vocab), tolerance());
  EXPECT_EQ(argmax(last_chunk_logits.data(), vocab), argmax(whole.data(), vocab));
}

INSTANTIATE_TEST_SUITE_P(Families, BatchedDecode,
                         testing::Values(BatchCase{"tiny-llama", Precision::F32}, BatchCase{"tiny-qwen2-text", Precision::F32},
                                         BatchCase{"tiny-fastvlm", Precision::F32}, BatchCase{"tiny-llama", Precision::Bf16},
                                         BatchCase{"tiny-qwen2-text", Precision::Bf16, "q8_0"},
                                         BatchCase{"tiny-llama", Precision::Bf16, "q4_0"}),
                         [](const auto& info) {
                           std::string name = std::string(info.param.model) + (info.param.precision == Precision::F32 ? "_f32" : "_bf16");
                           if (info.param.quantized) name += std::string("_") + info.param.quantized;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(BatchedDecode, ACacheThatIsFullOrTwiceInTheBatchIsRefusedBeforeAnyWork) {
  ModelLoadOptions options;
  options.precision = Precision::F32;
  const auto model = load_model(kFixtures / "tiny-llama", options);
  const TextDecoder& decoder = *model->decoder;
  const int hidden = decoder.config().hidden_size;
  KVCache roomy(decoder.config(), 8), full(decoder.config(), 1);
  std::vector<float> embeds(2 * hidden, 0.01f);
  decoder.forward(embeds.data(), 1, full);
  std::vector<KVCache*> caches = {&roomy, &full};
  EXPECT_THROW(decoder.forward_batch(embeds.data(), caches), Error);
  EXPECT_EQ(roomy.size(), 0);
  caches = {&roomy, &roomy};
  EXPECT_THROW(decoder.forward_batch(embeds.data(), caches), Error);
  EXPECT_EQ(roomy.size(), 0);
  // Position counts: one per sequence, each at least one, and all of them fitting.
  KVCache other(decoder.config(), 8);
  caches = {&roomy, &other};
  for (const std::vector<int>& counts : {std::vector<int>{1}, std::vector<int>{1, 0}, std::vector<int>{1, 9}}) {
    EXPECT_THROW(decoder.forward_batch(embeds.data(), caches, counts), Error);
    EXPECT_EQ(roomy.size(), 0);
    EXPECT_EQ(other.size(), 0);
  }
}

}  // namespace
