#pragma once
// The arithmetic a model runs in: the public choice (EngineOptions::precision), and inside the library the
// one compute type that the vision tower, the decoder and its attention are loaded for. In its own header
// so that src/ can take it without the rest of the API.

#include <string_view>

namespace fastvlm {

// Arithmetic of the vision tower and the LLM.
//   Auto (the default): the fastest path this CPU has whose error against F32 stays inside the bounds the
//     README states — from AVX2 up: Int8 vision and the LLM's linears as Q8_0 blocks (quantised at load when
//     the checkpoint is dense); else F32.
//   F32: the reference, within 1e-4 of it and its greedy tokens.
//   Bf16: AVX512-BF16 or AMX GEMMs with f32 accumulation, within 2e-2.
//   Int8: Bf16 (F32 without AVX512-BF16) with the vision tower's ConvFFN and attention 1x1 convs in int8
//     (per-channel weight and per-row activation scales): image embeddings within ~2% of f32 on the fixtures.
// A quantised checkpoint's LLM linears run as stored at every precision.
enum class Precision { Auto, F32, Bf16, Int8 };

// "auto", "f32", "bf16" or "int8" (the CLI's --dtype, the C and Python APIs' dtype); throws fastvlm::Error
// naming the accepted values for anything else.
Precision parse_precision(std::string_view name);
// The inverse: "auto", "f32", "bf16", "int8".
const char* precision_name(Precision precision);

}  // namespace fastvlm
