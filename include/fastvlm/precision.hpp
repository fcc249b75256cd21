#pragma once
// The arithmetic a model runs in: the public choice (EngineOptions::precision), and inside the library the
// one compute type that the vision tower, the decoder and its attention are loaded for. In its own header
// so that src/ can take it without the rest of the API.

namespace fastvlm {

// Arithmetic of the vision tower and the LLM. F32 (the default) reproduces the reference to 1e-4 and
// its greedy tokens; Bf16 (AVX512-BF16 or AMX GEMMs, f32 accumulation) is faster and within 2e-2 of it;
// Auto picks Bf16 where the CPU has it, else F32. Int8 is Bf16 with the vision tower's ConvFFN 1x1
// convs in int8 (VNNI; per-channel weight and per-tile activation scales): ~1.3x faster encoding,
// image embeddings within ~2% of f32 on the fixtures, so opt-in only.
enum class Precision { Auto, F32, Bf16, Int8 };

}  // namespace fastvlm
