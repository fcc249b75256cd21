// fastvlm encode: the vision path alone, written to a safetensors file for inspection and testing.
#include "commands.h"
#include "common.h"
#include "io/safetensors.h"

namespace fastvlm::cli {

void add_encode_command(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    std::string image, output;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* command = app.add_subcommand("encode", "Encode an image: pixel values, vision features, LLM embeddings");
  flags->model.add_to(*command);
  command->add_option("--image", flags->image, "Image file (JPEG, PNG, WebP)")->required();
  command->add_option("-o,--output", flags->output, "Output .safetensors file")->required();
  command->callback([flags] {
    auto engine = flags->model.load();
    const ModelInfo& info = engine->info();
    std::vector<float> features, pixels;
    std::vector<float> embeds = engine->embed_image(ImageInput::file(flags->image), nullptr, &features, &pixels);
    const int64_t size = info.image_size, tokens = info.image_tokens;
    auto f32 = [](const char* name, Shape shape, const std::vector<float>& data) {
      return TensorToWrite{name, DType::F32, std::move(shape), data.data(), data.size() * sizeof(float)};
    };
    write_safetensors(flags->output, {f32("pixel_values", {1, 3, size, size}, pixels),
                                      f32("image_features", {tokens, info.vision_channels}, features),
                                      f32("image_embeds", {tokens, info.hidden_size}, embeds)});
  });
}

}  // namespace fastvlm::cli
