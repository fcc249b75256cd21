#pragma once
// config.json of a FastVLM checkpoint, in either layout: the original `llava_qwen2` release (Qwen2 keys at
// the top level, LLaVA's mm_* keys, the tower named mobileclip_l_<size>) or the transformers-native
// `fast_vlm` conversion (Qwen2 under text_config, a timm FastViT under vision_config, the input size in
// preprocessor_config.json). Unknown values of keys the engine depends on (projector type, aspect-ratio
// mode, token mixers, ...) are errors naming the key.
#include <filesystem>
#include <string>

#include "llm/text_config.h"
#include "vision/vision_config.h"

namespace fastvlm {

enum class FastVlmLayout { LlavaQwen2, FastVlm };

struct FastVlmConfig {
  FastVlmLayout layout = FastVlmLayout::LlavaQwen2;
  TextConfig text;
  VisionConfig vision;
  int mm_hidden_size = 3072;
  int image_token_index = -200;  // the marker id in llava_qwen2 prompts; a real token id in fast_vlm
};

// Parses `dir`/config.json (and generation_config.json when present for eos ids).
FastVlmConfig load_fastvlm_config(const std::filesystem::path& dir);

// The llava_qwen2 name of a stored tensor: fast_vlm checkpoints group FastViT modules per stage and keep
// the LLM under model.language_model; model code looks everything up by the release's names.
std::string llava_tensor_name(const std::string& stored_name, FastVlmLayout layout, const VisionConfig& vision);

}  // namespace fastvlm
