#include "kernels/qgemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/capabilities.h"
#include "kernels/dispatch.h"
#include "kernels/quant_simd.h"
#include "kernels/row_count.h"
#include "kernels/simd_mask.h"
#include "kernels/simd_transpose.h"
#include "kernels/target.h"

// GCC 12 flags the deliberately undefined upper halves inside its own AVX-512 reduction intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastvlm {
namespace {

constexpr int kStepBytes = 4;                                 // K positions per 32-bit lane and step
constexpr int kStepsPerGroup = kQuantGroupSize / kStepBytes;  // 8
// Below this many multiply-accumulates the call stays on one thread: waking the team costs more.
constexpr int64_t kMinWorkToSplit = int64_t(1) << 20;

// Where one micro-tile's results go: rows [first_row, first_row + Rows) of y, the panel's columns.
struct TileOutput {
  float* y;             // at (first_row, first column of the panel)
  int64_t row_stride;   // N
  const float* bias;    // at the panel's first column, or null
  int columns;          // the panel's columns inside N (fewer than a panel only at the right edge)
};

template <typename T>
T& thread_scratch() {
  thread_local T scratch;
  return scratch;
}

// ---------------------------------------------------------------------------------------------------------
// AVX512-VNNI. VPDPBUSD multiplies unsigned by signed bytes, four pairs per int32 lane. The weight codes
// (int8, Q4_0 ones widened to int8 while packing) are the signed operand; the activation codes are made
// unsigned as q + 128, and the surplus 128·Σw of each column's group is removed by starting that group's
// accumulator at -128·Σw, computed once per packed panel. Every partial sum fits int32 exactly
// (|Σ| <= 32·255·127).
struct Avx512Vnni {
  static constexpr int kActivationBias = 128;
  static constexpr int kLanes = 16;  // int32 / float lanes of a zmm
  static constexpr int kPanelVectors = 2;
  static constexpr int kPanelColumns = kLanes * kPanelVectors;
  // 6 x 2 int32 and 6 x 2 float accumulators plus the weight and scale vectors nearly fill the 32 zmm
  // registers.
  static constexpr int kTileRows = 6;

  struct alignas(64) CodeLine {
    uint8_t bytes[64];
  };

  // The activations quantised per row and group.
  struct QuantizedRows {
    std::vector<uint8_t> codes;  // [rows, K]: q + 128
    std::vector<float> scales;   // [rows, groups]: d_x

    void resize(int64_t rows, int64_t cols) {
      codes.resize(size_t(rows * cols));
      scales.resize(size_t(rows * cols / kQuantGroupSize));
    }
  };

  // kPanelColumns consecutive weight rows (= output columns) over all of K, in VPDPBUSD operand order:
  // line (g * 8 + s) * 2 + v holds, for output columns 16v .. 16v+15 of the panel, their 4 int8 codes at
  // K offsets 32g + 4s .. 32g + 4s + 3. Columns past N are zero padding whose results are never stored.
  struct Panel {
    std::vector<CodeLine> codes;   // [groups * 8 * 2]
    std::vector<float> scales;     // [groups, 32]: d_w
    std::vector<int32_t> offsets;  // [groups, 32]: -128·Σ codes of the group, its accumulators' start
  };

  // Quantises rows [begin, end) of x (rows of `cols` floats) into q: d_x = max|x| / 127 per group and
  // code = round_to_nearest_even(x / d_x), as gemv_quant does.
  FASTVLM_TARGET_AVX512 static void quantize_rows(const float* x, int64_t cols, int64_t begin, int64_t end, QuantizedRows& q) {
    const int64_t groups = cols / kQuantGroupSize;
    const __m256i to_unsigned = _mm256_set1_epi8(char(0x80));  // int8 q -> uint8 q + 128
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t offset = r * cols + g * kQuantGroupSize;
        int8_t* codes = reinterpret_cast<int8_t*>(q.codes.data() + offset);
        q.scales[size_t(r * groups + g)] = simd::quantize_group_avx512(x + offset, codes);
        const __m256i signed_codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes), _mm256_xor_si256(signed_codes, to_unsigned));
      }
    }
  }

  // Packs output columns [first_column, first_column + 32) of `weights` into `panel`, reading each weight
  // row sequentially (64 bytes of 16 rows at a time, transposed in registers).
  FASTVLM_TARGET_AVX512 static void pack_panel(const QuantMatrix& weights, int64_t first_column, Panel& panel) {
    const int64_t groups = weights.groups_per_row();
    // A group's codes take 32 bytes (Q8_0) or 16 (Q4_0): shifts, not a division per line (perf put a sixth of
    // this function's samples on the idiv at FastVLM-7B's shapes).
    const int group_shift = weights.type == WeightType::Q8_0 ? 5 : 4;
    const int64_t row_bytes = quant_row_bytes(weights.type, weights.cols);
    panel.codes.resize(size_t(groups * kStepsPerGroup * kPanelVectors));
    panel.scales.resize(size_t(groups * kPanelColumns));
    panel.offsets.resize(size_t(groups * kPanelColumns));
    // Read once: the panel is written through vector pointers, which could alias the vectors' own fields.
    CodeLine* const lines = panel.codes.data();
    float* const scales = panel.scales.data();
    int32_t* const offsets = panel.offsets.data();
    auto line = [lines](int64_t group, int step, int vector) {
      return reinterpret_cast<__m512i*>(lines[(group * kStepsPerGroup + step) * kPanelVectors + vector].bytes);
    };
    const __m512i low_nibbles = _mm512_set1_epi8(0x0f), minus_eight = _mm512_set1_epi8(-8);
    for (int v = 0; v < kPanelVectors; ++v) {
      const int64_t column = first_column + int64_t(v) * kLanes;
      const int present = int(std::clamp<int64_t>(weights.rows - column, 0, kLanes));
      __m512i m[16];
      RowCodes rows[kLanes];
      for (int i = 0; i < present; ++i) rows[i] = weights.row(column + i);

      // Codes: dword j of a 64-byte chunk becomes one line, for all 16 columns at once.
      for (int64_t chunk = 0; chunk < row_bytes; chunk += 64) {
        const int dwords = int(std::min<int64_t>(64, row_bytes - chunk) / kStepBytes);
        const __mmask16 in_row = simd::first_lanes(dwords);
        for (int i = 0; i < kLanes; ++i)
          m[i] = i < present ? _mm512_maskz_loadu_epi32(in_row, rows[i].at(chunk)) : _mm512_setzero_si512();
        simd::transpose_16x16_epi32(m);
        for (int j = 0; j < dwords; ++j) {
          const int64_t byte = chunk + j * kStepBytes;
          const int64_t group = byte >> group_shift;
          const int step = int(byte & ((int64_t(1) << group_shift) - 1)) / kStepBytes;
          if (weights.type == WeightType::Q8_0) {
            _mm512_store_si512(line(group, step, v), m[j]);
          } else {
            // Byte b of a Q4_0 group holds weight b (low nibble) and weight b + 16 (high nibble), each as q + 8.
            const __m512i low = _mm512_and_si512(m[j], low_nibbles);
            const __m512i high = _mm512_and_si512(_mm512_srli_epi32(m[j], 4), low_nibbles);
            _mm512_store_si512(line(group, step, v), _mm512_add_epi8(low, minus_eight));
            _mm512_store_si512(line(group, step + kStepsPerGroup / 2, v), _mm512_add_epi8(high, minus_eight));
          }
        }
      }

      // Scales: 16 groups of 16 columns at a time, widened to float and transposed the same way.
      for (int64_t first_group = 0; first_group < groups; first_group += kLanes) {
        const int count = int(std::min<int64_t>(kLanes, groups - first_group));
        const __mmask16 in_row = simd::first_lanes(count);
        for (int i = 0; i < kLanes; ++i)
          m[i] = i < present ? _mm512_castps_si512(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                                   in_row, weights.row_scales(column + i) + first_group)))
                             : _mm512_setzero_si512();
        simd::transpose_16x16_epi32(m);
        for (int j = 0; j < count; ++j)
          _mm512_storeu_si512(scales + (first_group + j) * kPanelColumns + v * kLanes, m[j]);
      }

      // Accumulator starts: -128 · Σ codes, the sums taken with VPDPBUSD against bytes of 1.
      const __m512i ones = _mm512_set1_epi8(1);
      for (int64_t g = 0; g < groups; ++g) {
        __m512i sum = _mm512_setzero_si512();
        for (int s = 0; s < kStepsPerGroup; ++s)
          sum = _mm512_dpbusd_epi32(sum, ones, _mm512_load_si512(line(g, s, v)));
        _mm512_storeu_si512(offsets + g * kPanelColumns + v * kLanes,
                            _mm512_mullo_epi32(sum, _mm512_set1_epi32(-kActivationBias)));
      }
    }
  }

  // y[first_row .. first_row + Rows, panel columns] = x · dequant(panel)ᵀ (+ bias).
  template <int Rows>
  FASTVLM_TARGET_AVX512 static void multiply_tile(const Panel& panel, const QuantizedRows& x, int64_t first_row,
                                                  int64_t cols, const TileOutput& out) {
    const int64_t groups = cols / kQuantGroupSize;
    const uint8_t* codes = x.codes.data() + first_row * cols;
    const float* x_scales = x.scales.data() + first_row * groups;
    __m512 sums[Rows][kPanelVectors];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r)
      for (int v = 0; v < kPanelVectors; ++v) sums[r][v] = _mm512_setzero_ps();

    for (int64_t g = 0; g < groups; ++g) {
      __m512i dots[Rows][kPanelVectors];
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r)
        for (int v = 0; v < kPanelVectors; ++v)
          dots[r][v] = _mm512_loadu_si512(panel.offsets.data() + g * kPanelColumns + v * kLanes);
      const CodeLine* lines = panel.codes.data() + g * kStepsPerGroup * kPanelVectors;
#pragma GCC unroll 8
      for (int s = 0; s < kStepsPerGroup; ++s) {
        __m512i weight_codes[kPanelVectors];
        for (int v = 0; v < kPanelVectors; ++v)
          weight_codes[v] = _mm512_load_si512(lines[s * kPanelVectors + v].bytes);
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
          int32_t four_codes;
          std::memcpy(&four_codes, codes + r * cols + g * kQuantGroupSize + s * kStepBytes, sizeof four_codes);
          const __m512i activation = _mm512_set1_epi32(four_codes);
          for (int v = 0; v < kPanelVectors; ++v)
            dots[r][v] = _mm512_dpbusd_epi32(dots[r][v], activation, weight_codes[v]);
        }
      }
      __m512 weight_scales[kPanelVectors];
      for (int v = 0; v < kPanelVectors; ++v)
        weight_scales[v] = _mm512_loadu_ps(panel.scales.data() + g * kPanelColumns + v * kLanes);
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r) {
        const __m512 x_scale = _mm512_set1_ps(x_scales[r * groups + g]);
        for (int v = 0; v < kPanelVectors; ++v) {
          const __m512 dot = _mm512_mul_ps(_mm512_cvtepi32_ps(dots[r][v]), x_scale);
          sums[r][v] = _mm512_fmadd_ps(dot, weight_scales[v], sums[r][v]);
        }
      }
    }

    for (int v = 0; v < kPanelVectors; ++v) {
      const __mmask16 present = simd::first_lanes(out.columns - v * kLanes);
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r) {
        __m512 result = sums[r][v];
        if (out.bias) result = _mm512_add_ps(result, _mm512_maskz_loadu_ps(present, out.bias + v * kLanes));
        _mm512_mask_storeu_ps(out.y + r * out.row_stride + v * kLanes, present, result);
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------------------
// AVX2. Without VPDPBUSD the products run as VPMADDWD on int16: each lane multiplies two int16 activation
// codes by two int16 weight codes and adds the pair into int32, and VPADDD keeps the group's running sum.
// Exact: codes are int8 (|x| <= 127 from the activation quantisation, Q8_0 codes |w| <= 127, core/quant.h;
// Q4_0 ones in [-8, 7]), so a pair sums to at most 2·127·127 in int32 and a lane's group sum (32·127·127)
// fits with room to spare: the same exact group sums as gemv_quant's.
// Why int16 and not VPMADDUBSW: that multiplies unsigned by signed bytes, so a signed activation needs its
// sign moved onto the weight (VPSIGNB) first, and on Zen 3 VPSIGNB, VPMADDUBSW and VPMADDWD all issue on the
// same two pipes: three of them per 32 products, against two VPMADDWD (and two VPADDD, which any of the four
// vector pipes takes) for the same 32 here. The int16 codes take twice the bytes, which the caches absorb:
// the activation rows stream once per panel, and a panel is read from L1/L2 once per row tile.
struct Avx2 {
  static constexpr int kLanes = 8;                        // int32 / float lanes of a ymm
  static constexpr int kPairSteps = kQuantGroupSize / 2;  // 16 K pairs per group
  static constexpr int kPanelVectors = 3;
  static constexpr int kPanelColumns = kLanes * kPanelVectors;
  // Rows of a micro-tile: 4 x 3 int32 accumulators, an activation broadcast and a product fill 14 of the 16
  // ymm registers (the weight vectors are VPMADDWD's memory operands), and the 4 x 3 float sums spill to L1,
  // touched once per group. A broadcast takes a vector pipe as a VPMADDWD does, so wider tiles spend fewer
  // on them: per group, llvm-mca -mcpu=znver3 puts 4 x 2 at 101 cycles for 2048 products and 4 x 3 at 130
  // for 3072, and on Zen 3 (one thread, the 0.5B prefill, 3 alternating runs) 4 x 3 took 1891 [1876-1926] ms
  // against 2086 [1926-2146]. 5 x 2 and 6 x 2 had run no faster than 4 x 2, 3 x 3, 2 x 4 and 3 x 4 slower.
  static constexpr int kTileRows = 4;

  struct alignas(32) CodeLine {
    int16_t codes[2 * kLanes];
  };

  // The activations quantised per row and group, the codes widened to int16.
  struct QuantizedRows {
    std::vector<int16_t> codes;  // [rows, K]: q
    std::vector<float> scales;   // [rows, groups]: d_x

    void resize(int64_t rows, int64_t cols) {
      codes.resize(size_t(rows * cols));
      scales.resize(size_t(rows * cols / kQuantGroupSize));
    }
  };

  // kPanelColumns consecutive weight rows (= output columns) over all of K, as int16: line (g * 16 + s) * 3 + v
  // holds, for output columns 8v .. 8v+7 of the panel, their two codes at K offsets 32g + 2s and 32g + 2s + 1.
  // Columns past N are zero padding whose results are never stored.
  struct Panel {
    std::vector<CodeLine> codes;  // [groups * 16 * kPanelVectors]
    std::vector<float> scales;    // [groups, kPanelColumns]: d_w
  };

  FASTVLM_TARGET_AVX2 static void quantize_rows(const float* x, int64_t cols, int64_t begin, int64_t end,
                                                QuantizedRows& q) {
    const int64_t groups = cols / kQuantGroupSize;
    alignas(32) int8_t codes[kQuantGroupSize];
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t offset = r * cols + g * kQuantGroupSize;
        q.scales[size_t(r * groups + g)] = simd::quantize_group_avx2(x + offset, codes);
        const __m256i bytes = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes));
        __m256i* words = reinterpret_cast<__m256i*>(q.codes.data() + offset);
        _mm256_storeu_si256(words, _mm256_cvtepi8_epi16(_mm256_castsi256_si128(bytes)));
        _mm256_storeu_si256(words + 1, _mm256_cvtepi8_epi16(_mm256_extracti128_si256(bytes, 1)));
      }
    }
  }

  // The 32 codes of a group (`codes`: its first byte) as int8, in K order (Q4_0's nibbles q + 8 unpacked
  // to q).
  FASTVLM_TARGET_AVX2 static __m256i group_codes(WeightType type, const uint8_t* codes) {
    if (type == WeightType::Q8_0) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
    // Byte b of a Q4_0 group holds weight b (low nibble) and weight b + 16 (high nibble), each as q + 8.
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
    const __m128i low_nibbles = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    const __m128i low = _mm_sub_epi8(_mm_and_si128(packed, low_nibbles), eight);
    const __m128i high = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(packed, 4), low_nibbles), eight);
    return _mm256_set_m128i(high, low);
  }

  // Packs output columns [first_column, first_column + kPanelColumns) of `weights` into `panel`, 8 columns at
  // a time: each column's 32 codes widened to 16 pairs of int16 (two 8-pair halves), transposed in registers.
  FASTVLM_TARGET_AVX2 static void pack_panel(const QuantMatrix& weights, int64_t first_column, Panel& panel) {
    const int64_t groups = weights.groups_per_row();
    const int64_t group_bytes = quant_row_bytes(weights.type, kQuantGroupSize);
    panel.codes.resize(size_t(groups * kPairSteps * kPanelVectors));
    panel.scales.resize(size_t(groups * kPanelColumns));
    for (int v = 0; v < kPanelVectors; ++v) {
      const int64_t column = first_column + int64_t(v) * kLanes;
      const int present = int(std::clamp<int64_t>(weights.rows - column, 0, kLanes));
      // Row addresses hoisted out of the group loop.
      RowCodes rows[kLanes];
      for (int i = 0; i < present; ++i) rows[i] = weights.row(column + i);
      for (int64_t g = 0; g < groups; ++g) {
        __m256i first_half[kLanes], second_half[kLanes];  // row i: column i's pairs 0..7 / 8..15
        for (int i = 0; i < kLanes; ++i) {
          const __m256i codes =
              i < present ? group_codes(weights.type, rows[i].at(g * group_bytes)) : _mm256_setzero_si256();
          first_half[i] = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(codes));
          second_half[i] = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(codes, 1));
        }
        simd::transpose_8x8_epi32(first_half);
        simd::transpose_8x8_epi32(second_half);
        CodeLine* lines = panel.codes.data() + g * kPairSteps * kPanelVectors + v;
        for (int s = 0; s < kLanes; ++s) {
          _mm256_store_si256(reinterpret_cast<__m256i*>(lines[s * kPanelVectors].codes), first_half[s]);
          _mm256_store_si256(reinterpret_cast<__m256i*>(lines[(s + kLanes) * kPanelVectors].codes), second_half[s]);
        }
      }
      for (int i = 0; i < kLanes; ++i) {
        const uint16_t* scales = i < present ? weights.row_scales(column + i) : nullptr;
        for (int64_t g = 0; g < groups; ++g)
          panel.scales[size_t(g * kPanelColumns + v * kLanes + i)] = scales ? _cvtsh_ss(scales[g]) : 0.0f;
      }
    }
  }

  // y[first_row .. first_row + Rows, panel columns] = x · dequant(panel)ᵀ (+ bias).
  template <int Rows>
  FASTVLM_TARGET_AVX2 static void multiply_tile(const Panel& panel, const QuantizedRows& x, int64_t first_row,
                                                int64_t cols, const TileOutput& out) {
    const int64_t groups = cols / kQuantGroupSize;
    const int16_t* codes = x.codes.data() + first_row * cols;
    const float* x_scales = x.scales.data() + first_row * groups;
    __m256 sums[Rows][kPanelVectors];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r)
      for (int v = 0; v < kPanelVectors; ++v) sums[r][v] = _mm256_setzero_ps();

    for (int64_t g = 0; g < groups; ++g) {
      __m256i dots[Rows][kPanelVectors];
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r)
        for (int v = 0; v < kPanelVectors; ++v) dots[r][v] = _mm256_setzero_si256();
      const CodeLine* lines = panel.codes.data() + g * kPairSteps * kPanelVectors;
#pragma GCC unroll 16
      for (int s = 0; s < kPairSteps; ++s) {
        __m256i weight_codes[kPanelVectors];
        for (int v = 0; v < kPanelVectors; ++v)
          weight_codes[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lines[s * kPanelVectors + v].codes));
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
          int32_t pair;
          std::memcpy(&pair, codes + r * cols + g * kQuantGroupSize + 2 * s, sizeof pair);
          const __m256i activation = _mm256_set1_epi32(pair);
          for (int v = 0; v < kPanelVectors; ++v) {
            dots[r][v] = _mm256_add_epi32(dots[r][v], _mm256_madd_epi16(activation, weight_codes[v]));
            // Keeps the sum a running one: GCC otherwise reassociates the group's additions into a tree
            // whose partial products no longer fit the 16 registers.
            asm("" : "+x"(dots[r][v]));
          }
        }
      }
      __m256 weight_scales[kPanelVectors];
      for (int v = 0; v < kPanelVectors; ++v)
        weight_scales[v] = _mm256_loadu_ps(panel.scales.data() + g * kPanelColumns + v * kLanes);
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r) {
        const __m256 x_scale = _mm256_set1_ps(x_scales[r * groups + g]);
        for (int v = 0; v < kPanelVectors; ++v) {
          const __m256 dot = _mm256_mul_ps(_mm256_cvtepi32_ps(dots[r][v]), x_scale);
          sums[r][v] = _mm256_fmadd_ps(dot, weight_scales[v], sums[r][v]);
        }
      }
    }

    if (out.columns == kPanelColumns) {
      // Whole panels (all but one per call) store unmasked: VMASKMOVPS stores are slow on AMD cores.
      for (int v = 0; v < kPanelVectors; ++v) {
        const __m256 bias = out.bias ? _mm256_loadu_ps(out.bias + v * kLanes) : _mm256_setzero_ps();
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r)
          _mm256_storeu_ps(out.y + r * out.row_stride + v * kLanes, _mm256_add_ps(sums[r][v], bias));
      }
      return;
    }
    const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int v = 0; v < kPanelVectors; ++v) {
      const __m256i present = _mm256_cmpgt_epi32(_mm256_set1_epi32(out.columns - v * kLanes), lane_index);
#pragma GCC unroll 8
      for (int r = 0; r < Rows; ++r) {
        __m256 result = sums[r][v];
        if (out.bias) result = _mm256_add_ps(result, _mm256_maskload_ps(out.bias + v * kLanes, present));
        _mm256_maskstore_ps(out.y + r * out.row_stride + v * kLanes, present, result);
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------------------
// The product for either level: activations quantised, then weight panels packed and multiplied, a panel
// per OpenMP thread at a time.

// Weight bytes the next panel will pack. They are prefetched into L2 a slice per row tile while the
// current panel computes, so that packing does not wait for memory.
struct NextPanelBytes {
  const uint8_t* codes = nullptr;
  int64_t code_bytes = 0;
  const uint16_t* scales = nullptr;
  int64_t scale_count = 0;
};

void prefetch_slice(const void* data, int64_t bytes, int64_t slice, int64_t slices) {
  constexpr int64_t kLineBytes = 64;
  const char* base = static_cast<const char*>(data);
  for (int64_t offset = bytes * slice / slices; offset < bytes * (slice + 1) / slices; offset += kLineBytes)
    _mm_prefetch(base + offset, _MM_HINT_T1);
}

// All rows of y for the panel starting at output column `first_column`.
template <typename Level>
void multiply_panel(const typename Level::Panel& panel, const typename Level::QuantizedRows& x, int64_t rows, int64_t cols,
                    int64_t out_columns, int64_t first_column, const float* bias, const NextPanelBytes& next,
                    float* y) {
  TileOutput out{y + first_column, out_columns, bias ? bias + first_column : nullptr,
                 int(std::min<int64_t>(Level::kPanelColumns, out_columns - first_column))};
  const int64_t tiles = (rows + Level::kTileRows - 1) / Level::kTileRows;
  for (int64_t tile = 0; tile < tiles; ++tile, out.y += Level::kTileRows * out_columns) {
    prefetch_slice(next.codes, next.code_bytes, tile, tiles);
    prefetch_slice(next.scales, next.scale_count * int64_t(sizeof(uint16_t)), tile, tiles);
    const int64_t row = tile * Level::kTileRows;
    kernels::with_row_count<Level::kTileRows>(std::min<int64_t>(Level::kTileRows, rows - row), [&]<int R>() {
      Level::template multiply_tile<R>(panel, x, row, cols, out);
    });
  }
}

template <typename Level>
void linear_quant_with(const float* x, int64_t rows, std::span<const QuantProduct> products) {
  const int64_t cols = products[0].weights->cols, groups = products[0].weights->groups_per_row();
  constexpr int64_t kPanelColumns = Level::kPanelColumns;
  static_assert(kPanelColumns % kQuantRowBlock == 0, "a panel starts a block of rows (codes_from_row)");
  // The products' panels of output columns numbered one after another: product i's start at first_panel[i].
  std::vector<int64_t> first_panel(products.size() + 1, 0);
  int64_t work = 0;
  for (size_t i = 0; i < products.size(); ++i) {
    first_panel[i + 1] = first_panel[i] + (products[i].weights->rows + kPanelColumns - 1) / kPanelColumns;
    work += rows * products[i].weights->rows * cols;
  }
  const bool threaded = work >= kMinWorkToSplit;

  auto& quantized = thread_scratch<typename Level::QuantizedRows>();
  quantized.resize(rows, cols);
#pragma omp parallel if (threaded)
  {
    const int64_t threads = omp_get_num_threads(), thread = omp_get_thread_num();
    Level::quantize_rows(x, cols, rows * thread / threads, rows * (thread + 1) / threads, quantized);
  }

  // Each panel's packing (O(panel columns · K)) is amortised over all rows (O(rows · panel columns · K)).
  // Guided: runs of panels that shrink as they run out, so a thread the machine slowed down for a while
  // leaves its last panels to the others instead of holding them at the barrier. On a shared 2-core VM,
  // equal static halves had the threads waiting 8.9% of the tiles' time there, guided 5.0% (perf, 0.5B q8
  // prefill of 280 positions; q4 8.7% and 7.3%), and the prefill took 445 ms instead of 486 (q4 494 and
  // 504; medians of 7 alternations). The runs stay contiguous, so the next panel a thread prefetches is
  // mostly its own.
#pragma omp parallel for schedule(guided) if (threaded)
  for (int64_t index = 0; index < first_panel.back(); ++index) {
    const size_t product = size_t(std::upper_bound(first_panel.begin(), first_panel.end(), index) - first_panel.begin() - 1);
    const QuantMatrix& weights = *products[product].weights;
    const int64_t p = index - first_panel[product];
    auto& panel = thread_scratch<typename Level::Panel>();
    Level::pack_panel(weights, p * kPanelColumns, panel);
    NextPanelBytes next;
    if ((p + 1) * kPanelColumns < weights.rows) {
      const int64_t first = (p + 1) * kPanelColumns, count = std::min<int64_t>(kPanelColumns, weights.rows - first);
      next = {weights.codes_from_row(first), count * quant_row_bytes(weights.type, cols), weights.row_scales(first),
              count * groups};
    }
    multiply_panel<Level>(panel, quantized, rows, cols, weights.rows, p * kPanelColumns, products[product].bias, next,
                          products[product].y);
  }
}

// No scalar variant: there, callers take the dequantising path (kernels::quant_int8_gemm_available()).
struct QgemmOps {
  void (*linear)(const float*, int64_t, std::span<const QuantProduct>);
};

const QgemmOps& ops() {
  static const QgemmOps chosen = kernels::choose<QgemmOps>(
      {.avx2 = {linear_quant_with<Avx2>}, .avx512 = {linear_quant_with<Avx512Vnni>}});
  return chosen;
}

}  // namespace

void linear_quant(const float* x, int64_t rows, std::span<const QuantProduct> products) {
  if (!ops().linear)
    throw Error("linear_quant: needs AVX2, but the active kernel level is " + kernels::kernel_level_name());
  if (products.empty()) return;
  for (const QuantProduct& product : products) {
    const QuantMatrix& weights = *product.weights;
    if (weights.cols % kQuantGroupSize != 0 || weights.rows <= 0 || rows < 0 || weights.cols != products[0].weights->cols)
      throw Error("linear_quant: a [" + std::to_string(weights.rows) + ", " + std::to_string(weights.cols) +
                  "] weight matrix and " + std::to_string(rows) + " rows of " +
                  std::to_string(products[0].weights->cols) + "; expected columns a multiple of 32, equal for all");
  }
  ops().linear(x, rows, products);
}

void linear_quant(const float* x, int64_t rows, const QuantMatrix& weights, const float* bias, float* y) {
  const QuantProduct product{&weights, bias, y};
  linear_quant(x, rows, std::span<const QuantProduct>(&product, 1));
}

}  // namespace fastvlm
