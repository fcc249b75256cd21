#include "models/fastvlm/fastvlm.h"

#include "core/error.h"
#include "llm/decoder.h"
#include "models/fastvlm/fastvlm_config.h"
#include "vision/fastvit.h"

namespace fastvlm {
namespace {

TensorRenamer renamer(const FastVlmConfig& config) {
  return [layout = config.layout, vision = config.vision](const std::string& name) {
    return llava_tensor_name(name, layout, vision);
  };
}

// The release pads images to a black square (image_aspect_ratio "pad"); a transformers-native conversion
// ships a CLIP image processor (shortest edge, center crop) in preprocessor_config.json.
ImageProcessorConfig image_processor(const std::filesystem::path& dir, const FastVlmConfig& config) {
  ImageProcessorConfig processor;
  processor.size = processor.crop_height = processor.crop_width = config.vision.image_size;
  const auto file = dir / "preprocessor_config.json";
  if (config.layout != FastVlmLayout::FastVlm || !std::filesystem::exists(file)) return processor;
  processor = read_image_processor_config(file);
  if (!processor.do_center_crop || processor.crop_height != processor.crop_width ||
      processor.crop_height % config.vision.total_stride() != 0)
    throw Error(file.string() + ": key 'crop_size': expected a square center crop whose side is a multiple of " +
                std::to_string(config.vision.total_stride()) + " (the vision tower's stride)");
  return processor;
}

std::unique_ptr<Model> load_fastvlm(const std::filesystem::path& dir, const ModelLoadOptions& options) {
  const FastVlmConfig config = load_fastvlm_config(dir);
  auto model = std::make_unique<Model>();
  model->family = "fastvlm";
  model->chat_format = "fastvlm";
  model->checkpoint = Checkpoint::open(dir, renamer(config));
  const Checkpoint& checkpoint = *model->checkpoint;

  auto vision = std::make_unique<VisionPart>();
  vision->encoder = VisionTower::load(checkpoint, config.vision, options.precision);
  vision->projector = Projector::load(checkpoint, config.mm_hidden_size, config.text.hidden_size);
  vision->processor = image_processor(dir, config);
  vision->macs = [tower = config.vision](int image_size) { return vision_macs(tower, image_size); };
  model->vision = std::move(vision);
  model->decoder = Decoder::load(checkpoint, config.text, options.precision, options.quantize_llm);
  return model;
}

}  // namespace

const Architecture& fastvlm_architecture() {
  static const Architecture architecture = [] {
    Architecture a;
    a.family = "fastvlm";
    a.model_types = {"llava_qwen2", "fast_vlm"};
    a.architectures = {"LlavaQwen2ForCausalLM", "FastVlmForConditionalGeneration"};
    a.load = load_fastvlm;
    a.quantizable_weights = [](const std::filesystem::path& dir) {
      return [rename = renamer(load_fastvlm_config(dir))](const std::string& stored_name) {
        return is_decoder_linear_weight(rename(stored_name));
      };
    };
    return a;
  }();
  return architecture;
}

}  // namespace fastvlm
