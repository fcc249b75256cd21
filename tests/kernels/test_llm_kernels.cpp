// The decode kernels (bf16 and Q8_0/Q4_0 GEMV, single- and multi-row, attention dot/axpy, SiLU gating, softmax rows) on every
// kernel level this CPU has (the lower ones in child runs), against naive references written here from
// the documented arithmetic (kernels/gemv.h) and block layout (core/quant.h), on random data.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/quant.h"
#include "kernel_levels.h"
#include "quantized_weights.h"
#include "kernels/activations.h"
#include "kernels/dequantize.h"
#include "kernels/gemv.h"
#include "kernels/softmax.h"

namespace fastvlm {
namespace {

std::vector<float> random_floats(size_t count, uint32_t seed, float scale = 1.0f) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& v : values) v = normal(generator);
  return values;
}

// Weight j (0..31) of group g of a row, decoded from the documented layout, times its scale.
float decode_weight(WeightType type, const uint8_t* row_codes, const uint16_t* row_scales, int64_t column) {
  const int64_t g = column / 32, j = column % 32;
  int code;
  if (type == WeightType::Q8_0) {
    code = int8_t(row_codes[column]);
  } else {
    const uint8_t byte = row_codes[g * 16 + j % 16];
    code = (j < 16 ? (byte & 0xf) : (byte >> 4)) - 8;
  }
  return f16_to_f32(row_scales[g]) * float(code);
}

TEST(CpuFeatures, ActiveLevelNeverExceedsTheDetectedOne) {
  EXPECT_LE(active_isa(), detected_isa());
  const CpuFeatures& f = cpu_features();
  if (detected_isa() >= Isa::Avx512) {
    EXPECT_TRUE(f.avx512f && f.avx512bw && f.avx512_vnni && f.avx512_bf16);
  }
  if (detected_isa() >= Isa::Avx2) {
    EXPECT_TRUE(f.avx2 && f.fma && f.f16c);
  }
  EXPECT_EQ(isa_name(Isa::Avx2), "avx2");
  std::printf("detected %s, active %s\n", std::string(isa_name(detected_isa())).c_str(),
              std::string(isa_name(active_isa())).c_str());
}

TEST(HalfConversion, KnownValuesAndRoundTripOfEveryHalf) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(0.1f), 0x2e66);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);           // ties to even past the largest half: infinity
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -26)), 0x0000);  // below half of it
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    if ((bits & 0x7c00) == 0x7c00 && (bits & 0x3ff)) continue;  // NaN payloads
    ASSERT_EQ(f32_to_f16(f16_to_f32(uint16_t(bits))), bits) << std::hex << bits;
  }
}

class QuantFormat : public ::testing::TestWithParam<WeightType> {};

TEST_P(QuantFormat, QuantisationFollowsTheDocumentedLayoutAndError) {
  const WeightType type = GetParam();
  const int64_t rows = 5, cols = 96;
  std::vector<float> weights = random_floats(size_t(rows * cols), 1, 0.05f);
  std::vector<uint8_t> codes(size_t(rows * quant_row_bytes(type, cols)));
  std::vector<uint16_t> scales(size_t(rows * cols / 32));
  quantize_matrix(type, weights.data(), rows, cols, codes.data(), scales.data());

  const QuantMatrix matrix{type, codes.data(), scales.data(), rows, cols};
  std::vector<float> dequantized(size_t(rows * cols));
  dequantize_rows_f32(matrix, 0, rows, dequantized.data());
  std::vector<uint16_t> dequantized_bf16(size_t(rows * cols));
  dequantize_rows_bf16(matrix, 0, rows, dequantized_bf16.data());
  // Q8_0 rounds to the nearest of 127 steps per side. Q4_0 has 8 steps per side, and a weight of the
  // opposite sign to the group's extreme and nearly its size clamps to code 7: up to one whole step off.
  const float levels = type == WeightType::Q8_0 ? 127.0f : 8.0f;
  const float steps_off = type == WeightType::Q8_0 ? 0.5f : 1.0f;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < cols / 32; ++g) {
      float largest = 0;
      for (int j = 0; j < 32; ++j) largest = std::max(largest, std::fabs(weights[r * cols + g * 32 + j]));
      const float step = largest / levels;
      for (int j = 0; j < 32; ++j) {
        const int64_t i = r * cols + g * 32 + j;
        const float decoded = decode_weight(type, codes.data() + r * quant_row_bytes(type, cols), matrix.row_scales(r), g * 32 + j);
        EXPECT_EQ(dequantized[i], decoded);
        EXPECT_EQ(dequantized_bf16[i], f32_to_bf16(decoded));
        EXPECT_LE(std::fabs(decoded - weights[i]), steps_off * step * 1.01f + 1e-3f * largest) << "row " << r << " col " << g * 32 + j;
      }
    }
  }
}

TEST_P(QuantFormat, GemvMatchesTheIntegerReferenceOnEveryPath) {
  const WeightType type = GetParam();
  // 896 = 28 groups (whole AVX-512 pairs); 96 = 3 groups (a lone last group); 1056 = 33 groups (a whole
  // span of 16 groups' scales, a partial one and a lone group); 70 rows split over threads, not a multiple of
  // the rows a decode pass takes.
  for (const int64_t cols : {int64_t(896), int64_t(96), int64_t(1056)}) {
    const int64_t rows = 70;
    const std::vector<float> weights = random_floats(size_t(rows * cols), 2, 0.05f);
    const std::vector<float> x = random_floats(size_t(cols), 3);
    std::vector<uint8_t> codes(size_t(rows * quant_row_bytes(type, cols)));
    std::vector<uint16_t> scales(size_t(rows * cols / 32));
    quantize_matrix(type, weights.data(), rows, cols, codes.data(), scales.data());
    const QuantMatrix matrix{type, codes.data(), scales.data(), rows, cols};

    // Reference: x quantised per group as documented, exact integer dot products, double sums.
    std::vector<double> expected(size_t(rows), 0.0), magnitude(size_t(rows), 0.0), exact(size_t(rows), 0.0);
    for (int64_t g = 0; g < cols / 32; ++g) {
      float largest = 0;
      for (int j = 0; j < 32; ++j) largest = std::max(largest, std::fabs(x[g * 32 + j]));
      const float x_scale = largest / 127.0f;
      int x_codes[32];
      for (int j = 0; j < 32; ++j) x_codes[j] = int(std::nearbyint(x[g * 32 + j] * (127.0f / largest)));
      for (int64_t r = 0; r < rows; ++r) {
        const float w_scale = f16_to_f32(matrix.row_scales(r)[g]);
        int64_t dot = 0;
        for (int j = 0; j < 32; ++j) {
          const float w = decode_weight(type, codes.data() + r * quant_row_bytes(type, cols), matrix.row_scales(r), g * 32 + j);
          dot += int64_t(std::lrint(w / w_scale)) * x_codes[j];
          exact[r] += double(w) * x[g * 32 + j];
        }
        expected[r] += double(w_scale) * x_scale * double(dot);
        magnitude[r] += std::fabs(double(w_scale) * x_scale * double(dot));
      }
    }
    SCOPED_TRACE(std::string(isa_name(active_isa())) + ", cols " + std::to_string(cols));
    std::vector<float> y(size_t(rows), -1.0f);
    gemv_quant(matrix, x.data(), y.data());
    double error_vs_float = 0, norm = 0;
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_NEAR(y[r], expected[r], 1e-5 * magnitude[r] + 1e-6) << "row " << r;
      error_vs_float += (y[r] - exact[r]) * (y[r] - exact[r]);
      norm += exact[r] * exact[r];
    }
    // The int8 activations cost well under 1% against float activations on the same weights.
    EXPECT_LT(std::sqrt(error_vs_float / norm), 0.01);
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantFormat, ::testing::Values(WeightType::Q8_0, WeightType::Q4_0),
                         [](const auto& info) { return std::string(weight_type_name(info.param)); });

TEST(Bf16Gemv, MatchesADoubleReferenceOnEveryPath) {
  // 896 columns: whole registers; 100: a masked tail on every path.
  for (const int64_t cols : {int64_t(896), int64_t(100)}) {
    const int64_t rows = 67;
    const std::vector<float> weights_f32 = random_floats(size_t(rows * cols), 4, 0.05f);
    std::vector<uint16_t> weights(weights_f32.size());
    for (size_t i = 0; i < weights.size(); ++i) weights[i] = f32_to_bf16(weights_f32[i]);
    const std::vector<float> x = random_floats(size_t(cols), 5);
    SCOPED_TRACE(std::string(isa_name(active_isa())) + ", cols " + std::to_string(cols));
    std::vector<float> y(size_t(rows), -1.0f);
    gemv_bf16(weights.data(), rows, cols, x.data(), y.data());
    // AVX-512 rounds x to bf16 (relative 2^-9 per product); the others keep x in float.
    const double relative = active_isa() >= Isa::Avx512 ? std::ldexp(1.0, -8) : 1e-5;
    for (int64_t r = 0; r < rows; ++r) {
      double expected = 0, magnitude = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double product = double(bf16_to_f32(weights[r * cols + c])) * x[c];
        expected += product;
        magnitude += std::fabs(product);
      }
      EXPECT_NEAR(y[r], expected, relative * magnitude) << "row " << r;
    }
  }
}

// The single-row product takes several weight rows per pass: a row's result must not depend on which rows
// share its pass, so each row equals the product of that row alone (a one-row matrix), bit for bit.
TEST(QuantGemv, EachRowEqualsItsOwnOneRowMatrixExactlyOnEveryPath) {
  for (const int64_t cols : {int64_t(896), int64_t(1056), int64_t(96)}) {
    const int64_t rows = 23;
    const std::vector<float> weights = random_floats(size_t(rows * cols), 20, 0.05f);
    const std::vector<float> x = random_floats(size_t(cols), 21, 2.0f);
    for (const WeightType type : {WeightType::Q8_0, WeightType::Q4_0}) {
      SCOPED_TRACE(std::string(isa_name(active_isa())) + " " + std::string(weight_type_name(type)) + ", cols " +
                   std::to_string(cols));
      std::vector<uint8_t> codes(size_t(rows * quant_row_bytes(type, cols)));
      std::vector<uint16_t> scales(size_t(rows * cols / 32));
      quantize_matrix(type, weights.data(), rows, cols, codes.data(), scales.data());
      const QuantMatrix matrix{type, codes.data(), scales.data(), rows, cols};
      std::vector<float> y(size_t(rows), -1.0f);
      gemv_quant(matrix, x.data(), y.data());
      for (int64_t r = 0; r < rows; ++r) {
        // Copied out so that nothing past the row is readable as a neighbour.
        const uint8_t* row = codes.data() + r * quant_row_bytes(type, cols);
        const std::vector<uint8_t> row_codes(row, row + quant_row_bytes(type, cols));
        const std::vector<uint16_t> row_scales(matrix.row_scales(r), matrix.row_scales(r) + cols / 32);
        float alone = -1.0f;
        gemv_quant(QuantMatrix{type, row_codes.data(), row_scales.data(), 1, cols}, x.data(), &alone);
        ASSERT_EQ(y[r], alone) << "row " << r;
      }
    }
  }
}

// `count` values placed so that they end where readable memory ends: the page after them is inaccessible,
// so a read past the last one faults.
template <typename T>
class AtEndOfReadableMemory {
 public:
  explicit AtEndOfReadableMemory(const std::vector<T>& values) {
    const size_t page = size_t(sysconf(_SC_PAGESIZE)), bytes = values.size() * sizeof(T);
    const size_t data_pages = (bytes + page - 1) / page;
    size_ = (data_pages + 1) * page;
    void* base = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<uint8_t*>(base);
    if (mprotect(base_ + data_pages * page, page, PROT_NONE) != 0) throw std::runtime_error("mprotect failed");
    data_ = reinterpret_cast<T*>(base_ + data_pages * page - bytes);
    std::copy(values.begin(), values.end(), data_);
  }
  AtEndOfReadableMemory(const AtEndOfReadableMemory&) = delete;
  AtEndOfReadableMemory& operator=(const AtEndOfReadableMemory&) = delete;
  ~AtEndOfReadableMemory() { munmap(base_, size_); }
  const T* data() const { return data_; }

 private:
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  T* data_ = nullptr;
};

// A kernel may read a row's last span whole when the rows after it hold what it reads past the row, but never
// past the matrix (a checkpoint's weights may end where its mapping ends): with the codes and the scales each
// ending at an inaccessible page, every path gives the same products as from ordinary memory.
TEST(QuantGemv, ReadsNothingPastTheMatrixOnEveryPath) {
  for (const int64_t cols : {int64_t(896), int64_t(1056), int64_t(96), int64_t(32)}) {
    for (const int64_t rows : {int64_t(1), int64_t(2), int64_t(5), int64_t(23)}) {
      const std::vector<float> weights = random_floats(size_t(rows * cols), 40, 0.05f);
      const std::vector<float> x = random_floats(size_t(3 * cols), 41, 2.0f);
      for (const WeightType type : {WeightType::Q8_0, WeightType::Q4_0}) {
        SCOPED_TRACE(std::string(isa_name(active_isa())) + " " + std::string(weight_type_name(type)) + ", " +
                     std::to_string(rows) + " x " + std::to_string(cols));
        std::vector<uint8_t> codes(size_t(rows * quant_row_bytes(type, cols)));
        std::vector<uint16_t> scales(size_t(rows * cols / 32));
        quantize_matrix(type, weights.data(), rows, cols, codes.data(), scales.data());
        const AtEndOfReadableMemory<uint8_t> fenced_codes(codes);
        const AtEndOfReadableMemory<uint16_t> fenced_scales(scales);
        const QuantMatrix ordinary{type, codes.data(), scales.data(), rows, cols};
        const QuantMatrix fenced{type, fenced_codes.data(), fenced_scales.data(), rows, cols};
        for (const int64_t x_rows : {int64_t(1), int64_t(3)}) {
          std::vector<float> expected(size_t(x_rows * rows), -1.0f), y(size_t(x_rows * rows), -2.0f);
          gemv_quant_rows(ordinary, x.data(), x_rows, expected.data());
          gemv_quant_rows(fenced, x.data(), x_rows, y.data());
          EXPECT_EQ(y, expected) << x_rows << " activation rows";
        }
      }
    }
  }
}

// q/k/v and gate/up share one quantised input and one split of their rows over the threads, which cuts
// through the middle matrix at 2 and 3 threads: each output must equal that matrix's own product bit for bit,
// on plain rows and in blocks of 4 (where 37 rows leave a partial block inside the joint range).
TEST(QuantGemv, SharedInputGivesEachMatrixItsOwnProductExactlyOnEveryPath) {
  const int64_t cols = 896;
  const std::vector<float> x = random_floats(size_t(cols), 22, 2.0f);
  for (const auto& [type, row_block] : {std::pair{WeightType::Q8_0, 1}, std::pair{WeightType::Q4_0, 1},
                                        std::pair{WeightType::Q8_0, kQuantRowBlock}, std::pair{WeightType::Q4_0, kQuantRowBlock}}) {
    SCOPED_TRACE(std::string(isa_name(active_isa())) + " " + std::string(weight_type_name(type)) + ", blocks of " +
                 std::to_string(row_block));
    std::vector<std::vector<uint8_t>> codes;
    std::vector<std::vector<uint16_t>> scales;
    std::vector<QuantMatrix> matrices;
    for (const int64_t rows : {37, 301, 38}) {
      const std::vector<float> weights = random_floats(size_t(rows * cols), uint32_t(23 + rows), 0.05f);
      codes.emplace_back(size_t(rows * quant_row_bytes(type, cols)));
      scales.emplace_back(size_t(rows * cols / 32));
      quantize_matrix(type, weights.data(), rows, cols, codes.back().data(), scales.back().data());
      block_rows_in_place(codes.back().data(), rows, quant_row_bytes(type, cols), row_block);
      matrices.push_back({type, codes.back().data(), scales.back().data(), rows, cols, row_block});
    }
    std::vector<std::vector<float>> ys;
    std::vector<const QuantMatrix*> inputs;
    std::vector<float*> outputs;
    for (const QuantMatrix& m : matrices) ys.emplace_back(size_t(m.rows), -1.0f);
    for (size_t i = 0; i < matrices.size(); ++i) {
      inputs.push_back(&matrices[i]);
      outputs.push_back(ys[i].data());
    }
    gemv_quant_shared(inputs, x.data(), outputs);
    for (size_t i = 0; i < matrices.size(); ++i) {
      std::vector<float> alone(size_t(matrices[i].rows), -2.0f);
      gemv_quant(matrices[i], x.data(), alone.data());
      for (int64_t r = 0; r < matrices[i].rows; ++r) ASSERT_EQ(ys[i][r], alone[r]) << "matrix " << i << ", row " << r;
    }
    QuantMatrix narrower = matrices[0];
    narrower.cols = cols - 32;
    const QuantMatrix* mixed[] = {&matrices[0], &narrower};
    EXPECT_THROW(gemv_quant_shared(mixed, x.data(), std::span(outputs).first(2)), Error);
  }
}

// Where the decode GEMV reads 4 rows side by side the loader keeps quantised codes in blocks of 4 rows
// (core/quant.h). That layout is what the test helper writes out from the description, byte for byte, and
// every reader gives exactly what it gives on the plain layout: the decode products (one and several
// activation rows, single-row and batch entry points, with the codes ending at an inaccessible page) and the
// dequantisation, on matrices whose last block is partial and whose rows end in a shorter chunk. (Several
// matrices on one input: QuantGemv.SharedInput... above.)
TEST(QuantLayout, BlockedRowsGiveExactlyThePlainResultsOnEveryPath) {
  for (const int64_t cols : {int64_t(896), int64_t(96), int64_t(1056), int64_t(160)}) {
    for (const int64_t rows : {int64_t(1), int64_t(3), int64_t(6), int64_t(70)}) {
      const std::vector<float> x = random_floats(size_t(3 * cols), 51, 2.0f);
      for (const WeightType type : {WeightType::Q8_0, WeightType::Q4_0}) {
        SCOPED_TRACE(std::string(isa_name(active_isa())) + " " + std::string(weight_type_name(type)) + ", " +
                     std::to_string(rows) + " x " + std::to_string(cols));
        const QuantizedWeights w = make_quantized_weights(type, rows, cols, 50);
        const int64_t row_bytes = quant_row_bytes(type, cols);
        std::vector<uint8_t> in_place = w.codes;
        block_rows_in_place(in_place.data(), rows, row_bytes, kQuantRowBlock);
        ASSERT_EQ(in_place, w.blocked);
        const AtEndOfReadableMemory<uint8_t> fenced(in_place);
        const QuantMatrix& plain = w.view;
        const QuantMatrix blocked{type, fenced.data(), w.scales.data(), rows, cols, kQuantRowBlock};
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t b = 0; b < row_bytes; ++b) ASSERT_EQ(*blocked.row(r).at(b), w.codes[size_t(r * row_bytes + b)]) << r << ", " << b;
        for (const int64_t x_rows : {int64_t(1), int64_t(3)}) {
          std::vector<float> expected(size_t(x_rows * rows), -1.0f), y(size_t(x_rows * rows), -2.0f);
          gemv_quant_rows(plain, x.data(), x_rows, expected.data());
          gemv_quant_rows(blocked, x.data(), x_rows, y.data());
          EXPECT_EQ(y, expected) << x_rows << " activation rows";
          std::fill(y.begin(), y.end(), -2.0f);
          gemv_quant_batch(blocked, x.data(), x_rows, y.data());
          std::fill(expected.begin(), expected.end(), -1.0f);
          gemv_quant_batch(plain, x.data(), x_rows, expected.data());
          EXPECT_EQ(y, expected) << x_rows << " activation rows, batch";
        }
        std::vector<float> expected_f32(size_t(rows * cols)), f32(size_t(rows * cols));
        dequantize_rows_f32(plain, 0, rows, expected_f32.data());
        dequantize_rows_f32(blocked, 0, rows, f32.data());
        EXPECT_EQ(f32, expected_f32);
        std::vector<uint16_t> expected_bf16(size_t(rows * cols)), bf16(size_t(rows * cols));
        dequantize_rows_bf16(plain, 0, rows, expected_bf16.data());
        dequantize_rows_bf16(blocked, 0, rows, bf16.data());
        EXPECT_EQ(bf16, expected_bf16);
      }
    }
  }
}

// Batched decoding must not change a sequence's numbers: every row of the multi-row products equals the
// single-row product on that row bit for bit, for every chunk split of the rows (R = 1..17), on shapes with
// a lone last quantisation group / a masked bf16 tail and row counts split unevenly over threads.
TEST(MultiRowGemv, EachRowEqualsTheSingleRowProductExactlyOnEveryPath) {
  for (const int64_t cols : {int64_t(896), int64_t(96), int64_t(160)}) {
    const int64_t rows = 131;
    const std::vector<float> weights = random_floats(size_t(rows * cols), 8, 0.05f);
    std::vector<uint16_t> weights_bf16(weights.size());
    for (size_t i = 0; i < weights.size(); ++i) weights_bf16[i] = f32_to_bf16(weights[i]);
    const int64_t bf16_cols = cols + 4;  // not a whole register: the masked tail
    const std::vector<float> weights_tail = random_floats(size_t(rows * bf16_cols), 9, 0.05f);
    std::vector<uint16_t> tail_bf16(weights_tail.size());
    for (size_t i = 0; i < weights_tail.size(); ++i) tail_bf16[i] = f32_to_bf16(weights_tail[i]);
    for (const WeightType type : {WeightType::Q8_0, WeightType::Q4_0}) {
      std::vector<uint8_t> codes(size_t(rows * quant_row_bytes(type, cols)));
      std::vector<uint16_t> scales(size_t(rows * cols / 32));
      quantize_matrix(type, weights.data(), rows, cols, codes.data(), scales.data());
      const QuantMatrix matrix{type, codes.data(), scales.data(), rows, cols};
      for (int64_t x_rows = 1; x_rows <= 17; ++x_rows) {
        SCOPED_TRACE(std::string(isa_name(active_isa())) + " " + std::string(weight_type_name(type)) + ", cols " +
                     std::to_string(cols) + ", x_rows " + std::to_string(x_rows));
        // A zero row too: its scale is 0 and every product vanishes.
        std::vector<float> x = random_floats(size_t(x_rows * cols), uint32_t(10 + x_rows), 2.0f);
        if (x_rows > 2) std::fill(x.begin() + cols, x.begin() + 2 * cols, 0.0f);
        std::vector<float> y(size_t(x_rows * rows), -1.0f);
        std::vector<float> alone(static_cast<size_t>(rows));
        gemv_quant_rows(matrix, x.data(), x_rows, y.data());
        for (int64_t i = 0; i < x_rows; ++i) {
          gemv_quant(matrix, x.data() + i * cols, alone.data());
          for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(y[i * rows + r], alone[r]) << "x row " << i << ", row " << r;
        }
        if (type == WeightType::Q4_0) continue;  // the bf16 weights do not depend on the quantised type
        for (const auto& [w, w_cols] : {std::pair{&weights_bf16, cols}, std::pair{&tail_bf16, bf16_cols}}) {
          const std::vector<float> xb = random_floats(size_t(x_rows * w_cols), uint32_t(40 + x_rows), 1.0f);
          std::vector<float> yb(size_t(x_rows * rows), -1.0f);
          gemv_bf16_rows(w->data(), rows, w_cols, xb.data(), x_rows, yb.data());
          for (int64_t i = 0; i < x_rows; ++i) {
            gemv_bf16(w->data(), rows, w_cols, xb.data() + i * w_cols, alone.data());
            for (int64_t r = 0; r < rows; ++r)
              ASSERT_EQ(yb[i * rows + r], alone[r]) << "bf16 cols " << w_cols << ", x row " << i << ", row " << r;
          }
        }
      }
    }
  }
}

TEST(AttentionVectorKernels, ScoresAndValuesMatchDoublePrecisionAndDoNotDependOnTheQueryCount) {
  // 9 queries: a full block of the AVX-512 score kernel and a partial one; dims with and without a tail.
  constexpr int64_t count = 9, positions = 21, stride = 24;
  constexpr float scale = 0.125f;
  for (const int64_t dim : {int64_t(64), int64_t(37)}) {
    SCOPED_TRACE(std::string(isa_name(active_isa())) + ", dim " + std::to_string(dim));
    const std::vector<float> queries = random_floats(size_t(count * dim), 6), keys = random_floats(size_t(positions * dim), 7);
    const std::vector<float> values = random_floats(size_t(positions * dim), 8), weights = random_floats(size_t(count * stride), 9);
    std::vector<float> scores(size_t(count * stride), -1.0f), out(size_t(count * dim), -1.0f);
    attention_scores_f32(queries.data(), count, keys.data(), positions, dim, scale, scores.data(), stride);
    attention_values_f32(weights.data(), stride, count, values.data(), positions, dim, out.data());
    for (int64_t j = 0; j < count; ++j) {
      for (int64_t p = 0; p < positions; ++p) {
        double expected = 0, magnitude = 0;
        for (int64_t i = 0; i < dim; ++i) {
          expected += double(queries[j * dim + i]) * keys[p * dim + i];
          magnitude += std::fabs(double(queries[j * dim + i]) * keys[p * dim + i]);
        }
        EXPECT_NEAR(scores[j * stride + p], scale * expected, 1e-6 * scale * magnitude) << "query " << j << ", key " << p;
      }
      EXPECT_EQ(scores[j * stride + positions], -1.0f) << "wrote past the positions of query " << j;
      for (int64_t i = 0; i < dim; ++i) {
        double expected = 0, magnitude = 0;
        for (int64_t p = 0; p < positions; ++p) {
          expected += double(weights[j * stride + p]) * values[p * dim + i];
          magnitude += std::fabs(double(weights[j * stride + p]) * values[p * dim + i]);
        }
        EXPECT_NEAR(out[j * dim + i], expected, 1e-6 * magnitude) << "query " << j << ", lane " << i;
      }
    }
    // Each query alone gives its results bit for bit.
    for (int64_t j = 0; j < count; ++j) {
      std::vector<float> alone_scores(size_t(stride), -1.0f), alone_out(size_t(dim), -1.0f);
      attention_scores_f32(queries.data() + j * dim, 1, keys.data(), positions, dim, scale, alone_scores.data(), stride);
      attention_values_f32(weights.data() + j * stride, stride, 1, values.data(), positions, dim, alone_out.data());
      for (int64_t p = 0; p < positions; ++p) ASSERT_EQ(alone_scores[p], scores[j * stride + p]) << "query " << j;
      for (int64_t i = 0; i < dim; ++i) ASSERT_EQ(alone_out[i], out[j * dim + i]) << "query " << j;
    }
  }
}

TEST(Activations, SiluGatingAndSoftmaxMatchDoublePrecisionOnEveryPath) {
  // Arguments over the whole useful range, including the far tails where exp under/overflows.
  std::vector<float> gate = random_floats(4099, 8, 6.0f), up = random_floats(4099, 9);
  gate[0] = -120.0f;
  gate[1] = 95.0f;
  gate[2] = 0.0f;
  SCOPED_TRACE(isa_name(active_isa()));
  std::vector<float> out = gate;
  silu_multiply(out.data(), up.data(), int64_t(out.size()));
  for (size_t i = 0; i < gate.size(); ++i) {
    const double expected = double(gate[i]) / (1.0 + std::exp(-double(gate[i]))) * up[i];
    ASSERT_NEAR(out[i], expected, 1e-6 * std::fabs(expected) + 1e-30) << "element " << i;
  }
  for (const int64_t n : {int64_t(1), int64_t(37), int64_t(280)}) {
    std::vector<float> row = random_floats(size_t(n), 10, 8.0f);
    std::vector<double> expected(row.begin(), row.end());
    const double largest = *std::max_element(expected.begin(), expected.end());
    double sum = 0;
    for (double& v : expected) sum += (v = std::exp(v - largest));
    softmax_row(row.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(row[i], expected[i] / sum, 1e-6 * expected[i] / sum + 1e-12);
  }
}

TEST(OnlineSoftmaxTile, TilesRescaledByTheCorrectionsGiveTheWholeRowSoftmax) {
  // A rising row: every tile raises the running maximum, so the earlier tiles must be rescaled.
  auto row = random_floats(300, 3, 4.0f);
  for (size_t i = 0; i < row.size(); ++i) row[i] += 0.2f * float(i);
  const float scale = 0.125f;
  std::vector<double> expected(row.size());
  const float largest = *std::max_element(row.begin(), row.end());
  double sum = 0;
  for (size_t i = 0; i < row.size(); ++i) sum += (expected[i] = std::exp(double(scale) * (row[i] - largest)));
  for (double& e : expected) e /= sum;

  for (const bool bf16 : {false, true}) {
    // Tiles of 128 keys with 300 visible: 128, 128, then 44 visible in a 64-wide tile.
    std::vector<double> probabilities(row.size(), 0.0);
    float running_max = -INFINITY, running_sum = 0;
    for (int start = 0; start < 300; start += 128) {
      const int width = start + 128 <= 300 ? 128 : 64;
      std::vector<float> tile_f32(width, NAN);
      std::vector<uint16_t> tile_bf16(width, 0xffff);
      const float correction =
          bf16 ? online_softmax_tile(row.data() + start, 300 - start, width, scale, running_max, running_sum,
                                     tile_bf16.data())
               : online_softmax_tile(row.data() + start, 300 - start, width, scale, running_max, running_sum,
                                     tile_f32.data());
      for (int i = 0; i < start; ++i) probabilities[i] *= correction;
      for (int i = 0; i < width; ++i) {
        const float p = bf16 ? bf16_to_f32(tile_bf16[i]) : tile_f32[i];
        if (start + i < 300) {
          probabilities[start + i] = p;
        } else {
          EXPECT_EQ(p, 0.0f) << "masked key " << start + i;
        }
      }
    }
    for (size_t i = 0; i < row.size(); ++i) {
      EXPECT_NEAR(probabilities[i] / running_sum, expected[i], (bf16 ? 4e-3 : 1e-6) * expected[i] + 1e-9)
          << "isa " << isa_name(active_isa()) << (bf16 ? " bf16" : " f32") << " key " << i;
    }
  }
}

// The vector kernels find a row's maximum in blocks of lanes and then a scalar tail: the largest visible
// score must be found wherever it lies, and masked keys past `valid` must not count, however large.
TEST(OnlineSoftmaxTile, RunningMaxIsTheLargestVisibleScoreWhereverItLies) {
  const int64_t width = 64;
  for (const int64_t valid : {1, 7, 8, 9, 31, 32, 33, 45, 63}) {
    for (int64_t at = 0; at < valid; ++at) {
      std::vector<float> scores = random_floats(size_t(width), int(valid * 100 + at), 1.0f);
      scores[size_t(at)] = 5.0f;                                          // above every other visible score
      for (int64_t i = valid; i < width; ++i) scores[size_t(i)] = 50.0f;  // masked off
      std::vector<float> probabilities(static_cast<size_t>(width));
      float running_max = -INFINITY, running_sum = 0;
      online_softmax_tile(scores.data(), valid, width, 1.0f, running_max, running_sum, probabilities.data());
      ASSERT_EQ(running_max, 5.0f) << "isa " << isa_name(active_isa()) << ", " << valid << " visible, largest at "
                                   << at;
    }
  }
}

TEST(KernelLevels, LowerLevelsPass) { test_support::expect_lower_kernel_levels_pass(); }

}  // namespace
}  // namespace fastvlm
