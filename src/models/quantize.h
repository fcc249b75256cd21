#pragma once
// Writing a block-quantised copy of a model directory (what `fastvlm quantize` runs): the LLM linears
// (every decoder projection and lm_head) become Q8_0 or Q4_0 tensors, stored as `<name>.weight` (codes:
// I8 [out, in] or U8 [out, in/2]) plus `<name>.weight_scale` (F16 [out, in/32]) in the layout of
// core/quant.h; everything else (embedding, norms, biases, vision tower, projector) is copied unchanged, as
// are the tokenizer and generation_config files. config.json gains
// "quantization": {"type": "q8_0"|"q4_0", "group_size": 32}, which Checkpoint and Linear read back. The model
// family says which tensors are its linears (Architecture::quantizable_weights).
#include <cstddef>
#include <filesystem>

#include "core/quant.h"

namespace fastvlm {

struct QuantizeSummary {
  int linears = 0;         // tensors quantised
  size_t bytes_before = 0;  // their stored size before ...
  size_t bytes_after = 0;   // ... and after (codes + scales)
};

// Throws fastvlm::Error when `input` is not a loadable model, is already quantised, has no LLM linears,
// or `output` exists and is not empty. The written directory is opened again before returning.
QuantizeSummary quantize_model(const std::filesystem::path& input, const std::filesystem::path& output,
                               WeightType type);

}  // namespace fastvlm
