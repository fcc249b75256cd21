#pragma once
// A model as the engine composes it: a text decoder, and for vision-language models an image encoder and
// a projector. Each family (src/models/<family>/) reads its own config.json and tensor names and builds
// one; the registry (models/registry.h) picks the family from config.json.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "fastvlm/precision.hpp"
#include "image/preprocess.h"
#include "io/checkpoint.h"
#include "llm/text_decoder.h"
#include "vision/projector.h"
#include "vision/vision_encoder.h"

namespace fastvlm {

struct ModelLoadOptions {
  // Of the vision tower and the decoder: F32 (the reference), Bf16 or Int8, resolved from Auto by the
  // caller (VisionTower::load and Decoder::load say what each makes of it).
  Precision precision = Precision::F32;
  // Q8_0 or Q4_0: a dense checkpoint's LLM linears are block-quantised while loading (Decoder::load); a
  // quantised checkpoint keeps its own format.
  std::optional<WeightType> quantize_llm;
};

// The image half of a vision-language model.
struct VisionPart {
  std::unique_ptr<VisionEncoder> encoder;
  std::unique_ptr<Projector> projector;
  // How images become pixel values; its square output side (size, or the crop) is the native input size, a
  // multiple of the encoder's stride.
  ImageProcessorConfig processor;
  std::function<int64_t(int image_size)> macs;  // multiply-accumulates of one encode
};

struct Model {
  std::string family;  // the registry's name for it: "fastvlm", "qwen2", "llama"
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<TextDecoder> decoder;
  std::unique_ptr<VisionPart> vision;  // null for a text-only model
  // A chat format the family always uses ("fastvlm"); empty: the tokenizer's chat_template decides.
  std::string chat_format;
};

// A family the registry knows, keyed by config.json's model_type (and, for messages, architectures).
struct Architecture {
  std::string family;
  std::vector<std::string> model_types;
  std::vector<std::string> architectures;
  std::function<std::unique_ptr<Model>(const std::filesystem::path& dir, const ModelLoadOptions& options)> load;
  // For the model in `dir`: whether a tensor, by its stored name, is a linear weight that `fastvlm quantize`
  // may block-quantise.
  std::function<std::function<bool(const std::string& stored_name)>(const std::filesystem::path& dir)>
      quantizable_weights;
};

}  // namespace fastvlm
