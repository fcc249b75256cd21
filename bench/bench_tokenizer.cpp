// Encode throughput of the Qwen2 tokenizer (bytes of UTF-8 input per second) on generated English,
// Chinese, source code and a mix of the three. The tokenizer files come from FASTVLM_TOKENIZER_DIR,
// else from the qwen2-tokenizer fixture beside the checkout.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace {

using fastvlm::text::Tokenizer;

const Tokenizer& tokenizer() {
  static const std::unique_ptr<Tokenizer> loaded = [] {
    const char* dir = std::getenv("FASTVLM_TOKENIZER_DIR");
    return Tokenizer::load(dir ? std::filesystem::path(dir)
                               : std::filesystem::path(__FILE__).parent_path() / "../../shared/fixtures/qwen2-tokenizer");
  }();
  return *loaded;
}

const std::vector<std::string> kEnglishWords = {
    "the", "image", "shows", "a", "cat", "sitting", "on", "wooden", "table", "next", "to", "laptop", "while",
    "sunlight", "falls", "through", "window", "and", "two", "people", "are", "talking", "in", "background",
    "Vision", "language", "models", "encode", "pictures", "into", "tokens", "that", "transformer", "reads",
    "quickly", "however", "resolution", "matters", "because", "small", "text", "can't", "be", "read", "it's",
    "efficient", "hybrid", "convolutional", "architecture", "latency", "throughput", "benchmark", "results"};
const std::vector<std::string> kEnglishPunctuation = {" ", " ", " ", " ", ", ", ". ", "; ", "! ", "? ", " (", ") ", "\n"};
const std::vector<std::string> kChineseWords = {
    "视觉", "语言", "模型", "图像", "描述", "一只", "猫", "坐在", "桌子", "上", "旁边", "有", "笔记本电脑", "阳光",
    "透过", "窗户", "照进来", "背景", "中", "两个人", "正在", "交谈", "高效", "编码器", "分辨率", "延迟",
    "实验", "结果", "表明", "我们的", "方法", "显著", "提高", "了", "速度", "和", "准确率"};
const std::vector<std::string> kChinesePunctuation = {"", "", "", "", "，", "。", "、", "：", "！", "？", "\n"};
const std::vector<std::string> kCodeLines = {
    "for (int i = 0; i < n; ++i) {\n", "  sum += values[i] * weights[i];\n", "}\n",
    "def forward(self, x):\n", "    return self.proj(F.gelu(self.fc(x)))\n",
    "    if x.shape[-1] != 1536:\n", "        raise ValueError(f\"bad shape {x.shape}\")\n",
    "const auto it = table.find(key);\n", "if (it == table.end()) return -1;\n",
    "    hidden_states = hidden_states + residual  # pre-norm\n", "std::vector<float> buffer(4096, 0.0f);\n",
    "x = np.linspace(0, 1, 256).reshape(16, 16)\n", "    # TODO: fuse the 1x1 convolutions\n"};

// Text of about `bytes` bytes, built from the word lists at random so that pieces repeat as in real
// text without the whole input being one repeated sentence.
std::string generate_text(const std::vector<std::string>& words, const std::vector<std::string>& separators,
                          size_t bytes, unsigned seed) {
  std::mt19937 random(seed);
  std::string text;
  while (text.size() < bytes) {
    text += words[random() % words.size()];
    if (!separators.empty()) text += separators[random() % separators.size()];
    if (random() % 97 == 0) text += std::to_string(random() % 100000);
  }
  return text;
}

std::string generate_mixed(size_t bytes) {
  std::string text;
  for (unsigned paragraph = 0; text.size() < bytes; ++paragraph) {
    switch (paragraph % 3) {
      case 0: text += generate_text(kEnglishWords, kEnglishPunctuation, 2000, paragraph); break;
      case 1: text += generate_text(kChineseWords, kChinesePunctuation, 2000, paragraph); break;
      default: text += generate_text(kCodeLines, {}, 2000, paragraph); break;
    }
    text += "\n\n";
  }
  return text;
}

void run_encode(benchmark::State& state, const std::string& text) {
  const Tokenizer& t = tokenizer();
  size_t tokens = 0;
  for (auto _ : state) {
    const std::vector<int32_t> ids = t.encode(text);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
  state.counters["bytes_per_token"] = double(text.size()) / double(tokens);
}

constexpr size_t kTextBytes = 1 << 20;

void BM_EncodeMixed(benchmark::State& state) {
  static const std::string text = generate_mixed(kTextBytes);
  run_encode(state, text);
}
void BM_EncodeEnglish(benchmark::State& state) {
  static const std::string text = generate_text(kEnglishWords, kEnglishPunctuation, kTextBytes, 1);
  run_encode(state, text);
}
void BM_EncodeChinese(benchmark::State& state) {
  static const std::string text = generate_text(kChineseWords, kChinesePunctuation, kTextBytes, 2);
  run_encode(state, text);
}
void BM_EncodeCode(benchmark::State& state) {
  static const std::string text = generate_text(kCodeLines, {}, kTextBytes, 3);
  run_encode(state, text);
}
// A single 30,000-byte piece (10,000 ideographs without separators): the BPE merge loop itself.
void BM_EncodeLongCjkPiece(benchmark::State& state) {
  static const std::string text = [] {
    std::string run;
    std::mt19937 random(4);
    while (run.size() < 30000) run += kChineseWords[random() % kChineseWords.size()];
    return run;
  }();
  run_encode(state, text);
}

BENCHMARK(BM_EncodeMixed)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeEnglish)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeChinese)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeCode)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeLongCjkPiece)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
