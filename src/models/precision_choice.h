#pragma once
// What EngineOptions::precision means on this CPU. Auto takes the fastest arithmetic the CPU has whose
// error against the f32 reference stays inside the bounds the README states (bench/accuracy.sh measures
// them, tests/vlm/test_auto_precision.cpp holds Auto to them):
//   - AVX2 and up: the vision tower's int8 path (Int8: AMX tiles, AVX512-VNNI, or 16-bit pairs on AVX2, its
//     other layers bf16 where the CPU has bf16 products, else f32) and the LLM's linears as Q8_0 blocks,
//     quantised at load when the checkpoint is dense, so that prefill runs the int8 GEMM and decode streams
//     ~1.06 bytes per weight instead of 2 (bf16) or 4 (f32). (Every AVX-512 level here has VNNI and BF16.)
//   - scalar: F32, the reference.
// The measurements behind each choice are in the README's performance section and docs/performance-log.md.
#include <string>

#include "fastvlm/precision.hpp"
#include "models/model.h"

namespace fastvlm {

// `requested` as the vision tower and the decoder load it (Auto resolved for this CPU's active kernel level).
ModelLoadOptions resolve_precision(Precision requested);

// The user's choice and what runs, e.g. "auto -> vision int8, llm q8_0 (quantised at load)". `has_vision`:
// the model has an image tower; `stored_quantization`: the checkpoint's LLM block format ("" when dense).
std::string describe_precision(Precision requested, const ModelLoadOptions& resolved, bool has_vision,
                               const std::string& stored_quantization);

}  // namespace fastvlm
