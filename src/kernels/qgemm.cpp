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
#include "kernels/simd_mask.h"
#include "kernels/simd_transpose.h"
#include "kernels/target.h"

// GCC 12 flags the deliberately undefined upper halves inside its own AVX-512 reduction intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fastvlm {
namespace {

// VPDPBUSD multiplies unsigned by signed bytes, four pairs per int32 lane. The weight codes (int8, Q4_0
// ones widened to int8 while packing) are the signed operand; the activation codes are made unsigned as
// q + 128, and the surplus 128·Σw of each column's group is removed by starting that group's
// accumulator at -128·Σw, computed once per packed panel. Every partial sum fits int32 exactly
// (|Σ| <= 32·255·127).
constexpr int kActivationBias = 128;
constexpr int kStepBytes = 4;                                 // K positions per VPDPBUSD
constexpr int kStepsPerGroup = kQuantGroupSize / kStepBytes;  // 8
constexpr int kLanes = 16;                                    // int32 / float lanes of a zmm
constexpr int kPanelVectors = 2;                              // a panel's output columns, in zmm
constexpr int kPanelColumns = kLanes * kPanelVectors;
// Rows of a micro-tile: 6 x 2 int32 and 6 x 2 float accumulators plus the weight and scale vectors
// nearly fill the 32 zmm registers.
constexpr int kTileRows = 6;
// Below this many multiply-accumulates the call stays on one thread: waking the team costs more.
constexpr int64_t kMinWorkToSplit = int64_t(1) << 20;

struct alignas(64) CodeLine {
  uint8_t bytes[64];
};

// The activations quantised per row and group.
struct QuantizedRows {
  std::vector<uint8_t> codes;  // [rows, K]: q + 128
  std::vector<float> scales;   // [rows, groups]: d_x
};

// kPanelColumns consecutive weight rows (= output columns) over all of K, in VPDPBUSD operand order:
// line (g * 8 + s) * 2 + v holds, for output columns 16v .. 16v+15 of the panel, their 4 int8 codes at
// K offsets 32g + 4s .. 32g + 4s + 3. Columns past N are zero padding whose results are never stored.
struct PackedPanel {
  std::vector<CodeLine> codes;   // [groups * 8 * 2]
  std::vector<float> scales;     // [groups, 32]: d_w
  std::vector<int32_t> offsets;  // [groups, 32]: -128·Σ codes of the group, its accumulators' start
};

QuantizedRows& activation_scratch() {
  thread_local QuantizedRows scratch;
  return scratch;
}

PackedPanel& panel_scratch() {
  thread_local PackedPanel scratch;
  return scratch;
}

// Quantises rows [begin, end) of x (rows of `cols` floats) into q: d_x = max|x| / 127 per group and
// code = round_to_nearest_even(x / d_x), as gemv_quant does.
FASTVLM_TARGET_AVX512 void quantize_rows(const float* x, int64_t cols, int64_t begin, int64_t end,
                                         QuantizedRows& q) {
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
FASTVLM_TARGET_AVX512 void pack_panel(const QuantMatrix& weights, int64_t first_column, PackedPanel& panel) {
  const int64_t groups = weights.groups_per_row();
  const int64_t group_bytes = quant_row_bytes(weights.type, kQuantGroupSize);
  const int64_t row_bytes = quant_row_bytes(weights.type, weights.cols);
  panel.codes.resize(size_t(groups * kStepsPerGroup * kPanelVectors));
  panel.scales.resize(size_t(groups * kPanelColumns));
  panel.offsets.resize(size_t(groups * kPanelColumns));
  auto line = [&](int64_t group, int step, int vector) {
    const size_t index = size_t((group * kStepsPerGroup + step) * kPanelVectors + vector);
    return reinterpret_cast<__m512i*>(panel.codes[index].bytes);
  };
  const __m512i low_nibbles = _mm512_set1_epi8(0x0f), minus_eight = _mm512_set1_epi8(-8);
  for (int v = 0; v < kPanelVectors; ++v) {
    const int64_t column = first_column + int64_t(v) * kLanes;
    const int present = int(std::clamp<int64_t>(weights.rows - column, 0, kLanes));
    __m512i m[16];

    // Codes: dword j of a 64-byte chunk becomes one line, for all 16 columns at once.
    for (int64_t chunk = 0; chunk < row_bytes; chunk += 64) {
      const int dwords = int(std::min<int64_t>(64, row_bytes - chunk) / kStepBytes);
      const __mmask16 in_row = simd::first_lanes(dwords);
      for (int i = 0; i < kLanes; ++i)
        m[i] = i < present ? _mm512_maskz_loadu_epi32(in_row, weights.row_codes(column + i) + chunk)
                           : _mm512_setzero_si512();
      simd::transpose_16x16_epi32(m);
      for (int j = 0; j < dwords; ++j) {
        const int64_t byte = chunk + j * kStepBytes;
        const int64_t group = byte / group_bytes;
        const int step = int(byte % group_bytes / kStepBytes);
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
        _mm512_storeu_si512(panel.scales.data() + (first_group + j) * kPanelColumns + v * kLanes, m[j]);
    }

    // Accumulator starts: -128 · Σ codes, the sums taken with VPDPBUSD against bytes of 1.
    const __m512i ones = _mm512_set1_epi8(1);
    for (int64_t g = 0; g < groups; ++g) {
      __m512i sum = _mm512_setzero_si512();
      for (int s = 0; s < kStepsPerGroup; ++s) sum = _mm512_dpbusd_epi32(sum, ones, _mm512_load_si512(line(g, s, v)));
      _mm512_storeu_si512(panel.offsets.data() + g * kPanelColumns + v * kLanes,
                          _mm512_mullo_epi32(sum, _mm512_set1_epi32(-kActivationBias)));
    }
  }
}

// Where one micro-tile's results go: rows [first_row, first_row + Rows) of y, the panel's columns.
struct TileOutput {
  float* y;             // at (first_row, first column of the panel)
  int64_t row_stride;   // N
  const float* bias;    // at the panel's first column, or null
  __mmask16 columns_present[kPanelVectors];
};

// y[first_row .. first_row + Rows, panel columns] = x · dequant(panel)ᵀ (+ bias).
template <int Rows>
FASTVLM_TARGET_AVX512 void multiply_tile(const PackedPanel& panel, const QuantizedRows& x, int64_t first_row,
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

#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r) {
    for (int v = 0; v < kPanelVectors; ++v) {
      const __mmask16 present = out.columns_present[v];
      __m512 result = sums[r][v];
      if (out.bias) result = _mm512_add_ps(result, _mm512_maskz_loadu_ps(present, out.bias + v * kLanes));
      _mm512_mask_storeu_ps(out.y + r * out.row_stride + v * kLanes, present, result);
    }
  }
}

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
void multiply_panel(const PackedPanel& panel, const QuantizedRows& x, int64_t rows, int64_t cols, int64_t out_columns,
                    int64_t first_column, const float* bias, const NextPanelBytes& next, float* y) {
  TileOutput out{y + first_column, out_columns, bias ? bias + first_column : nullptr, {}};
  for (int v = 0; v < kPanelVectors; ++v) {
    out.columns_present[v] = simd::first_lanes(out_columns - first_column - v * kLanes);
  }
  const int64_t tiles = (rows + kTileRows - 1) / kTileRows;
  for (int64_t tile = 0; tile < tiles; ++tile, out.y += kTileRows * out_columns) {
    prefetch_slice(next.codes, next.code_bytes, tile, tiles);
    prefetch_slice(next.scales, next.scale_count * int64_t(sizeof(uint16_t)), tile, tiles);
    const int64_t row = tile * kTileRows;
    static_assert(kTileRows == 6, "the switch below covers 1 .. kTileRows rows");
    switch (std::min<int64_t>(kTileRows, rows - row)) {
      case 6: multiply_tile<6>(panel, x, row, cols, out); break;
      case 5: multiply_tile<5>(panel, x, row, cols, out); break;
      case 4: multiply_tile<4>(panel, x, row, cols, out); break;
      case 3: multiply_tile<3>(panel, x, row, cols, out); break;
      case 2: multiply_tile<2>(panel, x, row, cols, out); break;
      case 1: multiply_tile<1>(panel, x, row, cols, out); break;
    }
  }
}

void linear_quant_avx512(const float* x, int64_t rows, const QuantMatrix& weights, const float* bias, float* y) {
  const int64_t cols = weights.cols, groups = weights.groups_per_row();
  const bool threaded = rows * weights.rows * cols >= kMinWorkToSplit;

  QuantizedRows& quantized = activation_scratch();
  quantized.codes.resize(size_t(rows * cols));
  quantized.scales.resize(size_t(rows * groups));
#pragma omp parallel if (threaded)
  {
    const int64_t threads = omp_get_num_threads(), thread = omp_get_thread_num();
    quantize_rows(x, cols, rows * thread / threads, rows * (thread + 1) / threads, quantized);
  }

  // Each panel's packing (O(32·K)) is amortised over all rows (O(rows·32·K)).
  const int64_t panels = (weights.rows + kPanelColumns - 1) / kPanelColumns;
#pragma omp parallel for schedule(static) if (threaded)
  for (int64_t p = 0; p < panels; ++p) {
    PackedPanel& panel = panel_scratch();
    pack_panel(weights, p * kPanelColumns, panel);
    NextPanelBytes next;
    if (p + 1 < panels) {
      const int64_t first = (p + 1) * kPanelColumns, count = std::min<int64_t>(kPanelColumns, weights.rows - first);
      next = {weights.row_codes(first), count * quant_row_bytes(weights.type, cols), weights.row_scales(first),
              count * groups};
    }
    multiply_panel(panel, quantized, rows, cols, weights.rows, p * kPanelColumns, bias, next, y);
  }
}

// Only an AVX-512 variant: below it, callers take the dequantising path (int8_compute_available()).
struct QgemmOps {
  void (*linear)(const float*, int64_t, const QuantMatrix&, const float*, float*);
};

const QgemmOps& ops() {
  static const QgemmOps chosen = kernels::choose<QgemmOps>({.avx512 = {linear_quant_avx512}});
  return chosen;
}

}  // namespace

void linear_quant(const float* x, int64_t rows, const QuantMatrix& weights, const float* bias, float* y) {
  if (!ops().linear)
    throw Error("linear_quant: needs AVX512-VNNI, but the active kernel level is " + kernels::kernel_level_name());
  if (weights.cols % kQuantGroupSize != 0 || weights.rows <= 0 || rows < 0)
    throw Error("linear_quant: a [" + std::to_string(weights.rows) + ", " + std::to_string(weights.cols) +
                "] weight matrix and " + std::to_string(rows) + " rows; expected columns a multiple of 32");
  ops().linear(x, rows, weights, bias, y);
}

}  // namespace fastvlm
