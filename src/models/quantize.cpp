#include "models/quantize.h"

#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/json_file.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "kernels/weight_quant.h"
#include "models/registry.h"

namespace fastvlm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The safetensors files of a model directory: model.safetensors, or the shards its index names.
std::vector<fs::path> weight_files(const fs::path& dir) {
  if (fs::exists(dir / "model.safetensors")) return {dir / "model.safetensors"};
  const fs::path index = dir / "model.safetensors.index.json";
  const json root = read_json_file(index);
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : root.at("weight_map").items()) shards.insert(shard.get<std::string>());
  std::vector<fs::path> files;
  for (const auto& shard : shards) files.push_back(dir / shard);
  return files;
}

struct QuantizedTensor {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales;
};

}  // namespace

QuantizeSummary quantize_model(const fs::path& input, const fs::path& output, WeightType type) {
  // The family names its linears; its config and the weight files are validated before anything is written.
  const auto is_linear_weight = find_architecture(input).quantizable_weights(input);
  const auto checkpoint = Checkpoint::open(input);
  if (!checkpoint->quantization().type.empty())
    throw Error(input.string() + " is already quantised (" + checkpoint->quantization().type + ")");
  if (fs::exists(output) && !fs::is_empty(output))
    throw Error(output.string() + " exists and is not empty; choose a new output directory");
  fs::create_directories(output);

  std::vector<std::unique_ptr<SafetensorsFile>> sources;
  for (const auto& path : weight_files(input)) sources.push_back(SafetensorsFile::open(path));

  // Quantised buffers must outlive the write; unchanged tensors are written straight from the mapping.
  std::vector<std::unique_ptr<QuantizedTensor>> quantized;
  std::vector<TensorToWrite> tensors;
  size_t bytes_in = 0, bytes_out = 0;
  int quantized_count = 0;
  for (const auto& file : sources) {
    for (const TensorInfo& info : file->tensors()) {
      const bool quantise = is_linear_weight(info.name) && info.shape.size() == 2 &&
                            info.shape[1] % kQuantGroupSize == 0;
      if (!quantise) {
        tensors.push_back({info.name, info.dtype, info.shape, info.data, info.nbytes});
        continue;
      }
      const int64_t rows = info.shape[0], cols = info.shape[1];
      if (info.dtype != DType::F32 && info.dtype != DType::F16 && info.dtype != DType::BF16)
        throw Error(file->path().string() + ": tensor '" + info.name + "' is " + std::string(dtype_name(info.dtype)) +
                    ", expected F32, F16 or BF16 to quantise");
      auto q = std::make_unique<QuantizedTensor>();
      q->codes.resize(size_t(rows * quant_row_bytes(type, cols)));
      q->scales.resize(size_t(rows * (cols / kQuantGroupSize)));
      quantize_finite_weight_rows(file->path().string() + ": tensor '" + info.name + "'", 0, type, info.dtype, info.data,
                                  rows, cols, q->codes.data(), q->scales.data());
      const std::string scale_name = info.name.substr(0, info.name.size() - std::string("weight").size()) + "weight_scale";
      tensors.push_back({info.name, type == WeightType::Q8_0 ? DType::I8 : DType::U8,
                         {rows, quant_row_bytes(type, cols)}, q->codes.data(), q->codes.size()});
      tensors.push_back({scale_name, DType::F16, {rows, cols / kQuantGroupSize}, q->scales.data(),
                         q->scales.size() * sizeof(uint16_t)});
      bytes_in += info.nbytes;
      bytes_out += q->codes.size() + q->scales.size() * sizeof(uint16_t);
      ++quantized_count;
      quantized.push_back(std::move(q));
    }
  }
  if (quantized_count == 0) throw Error(input.string() + ": found no LLM linear weights to quantise");
  write_safetensors(output / "model.safetensors", tensors, {{"format", "pt"}});

  json config = read_json_file(input / "config.json");
  config["quantization"] = {{"type", std::string(weight_type_name(type))}, {"group_size", kQuantGroupSize}};
  std::ofstream(output / "config.json") << config.dump(2) << '\n';
  // Tokenizer files, generation_config.json, and anything else that is not weights, as they are.
  for (const auto& entry : fs::directory_iterator(input)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name == "config.json" || name == "model.safetensors.index.json" ||
        entry.path().extension() == ".safetensors")
      continue;
    fs::copy_file(entry.path(), output / name);
  }
  Checkpoint::open(output);  // the result must open
  return {quantized_count, bytes_in, bytes_out};
}


}  // namespace fastvlm
