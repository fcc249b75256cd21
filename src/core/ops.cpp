#include "core/ops.h"

#include <algorithm>

namespace fastvlm {

void softmax_rows(float* x, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    float max_value = *std::max_element(row, row + cols);
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      row[c] = std::exp(row[c] - max_value);
      sum += row[c];
    }
    float inv = float(1.0 / sum);
    for (int64_t c = 0; c < cols; ++c) row[c] *= inv;
  }
}

}  // namespace fastvlm
