// libFuzzer target: the JSON files of a model directory. The input is written as config.json,
// generation_config.json, preprocessor_config.json and model.safetensors.index.json at once, and each is
// read the way loading a model reads it: the registry's family lookup, that family's config parse (with the
// generation eos ids and, for fast_vlm, the processor's input size), the quantization record, the CLIP
// processor config and the shard index. Anything malformed must be a fastvlm::Error.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_file.h"
#include "fuzz_files.h"
#include "image/preprocess.h"
#include "io/checkpoint.h"
#include "io/config_keys.h"
#include "models/fastvlm/fastvlm_config.h"
#include "models/llama/llama.h"
#include "models/qwen2/qwen2.h"
#include "models/registry.h"

namespace {

using namespace fastvlm;

template <typename Step>
void expect_only_errors(Step&& step) {
  try {
    step();
  } catch (const Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  for (const char* name : {"config.json", "generation_config.json", "preprocessor_config.json",
                           "model.safetensors.index.json"})
    fuzz::write_file(name, text);
  const auto& dir = fuzz::scratch_dir();
  expect_only_errors([&] {
    const Architecture& architecture = find_architecture(dir);
    if (architecture.family == "fastvlm") {
      load_fastvlm_config(dir);
      return;
    }
    const nlohmann::json root = read_json_file(dir / "config.json");
    const ConfigKeys keys(root, dir / "config.json");
    TextConfig config = architecture.family == "llama" ? parse_llama_config(keys) : parse_qwen2_config(keys);
    read_generation_eos_ids(dir, config);
  });
  expect_only_errors([&] { read_quantization_config(dir); });
  expect_only_errors([&] { read_image_processor_config(dir / "preprocessor_config.json"); });
  expect_only_errors([&] { Checkpoint::open(dir); });
  return 0;
}
