#pragma once
// What EngineOptions::precision means on this CPU. Auto takes the fastest arithmetic the CPU has whose
// error against the f32 reference stays inside the bounds the README states (bench/accuracy.sh measures
// them, tests/vlm/test_auto_precision.cpp holds Auto to them):
//   - AVX512-VNNI (with AVX512-BF16; Zen 4/5, Intel with AMX): the vision tower's int8 path (Int8) and the
//     LLM's linears as Q8_0 blocks, quantised at load when the checkpoint is dense, so that prefill runs the
//     int8 GEMM and decode streams ~1.06 bytes per weight instead of 2 (bf16) or 4 (f32);
//   - AVX512-BF16 without VNNI: Bf16;
//   - AVX2: the vision tower in F32 (the reference: no bf16 or int8 GEMMs for it) and the LLM's linears as
//     Q8_0 blocks, whose prefill runs the AVX2 int8 GEMM and whose decode streams a quarter of f32's bytes;
//   - scalar: F32, the reference.
// The measurements behind each choice are in the README's performance section.
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
