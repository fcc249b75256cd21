#pragma once
// A model directory in the Hugging Face layout: config.json, model.safetensors (or shards listed in
// model.safetensors.index.json), tokenizer files. Tensors are looked up by their name in the original
// `llava_qwen2` release; other layouts are translated here so model code sees one naming.
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "io/config.h"
#include "io/safetensors.h"

namespace fastvlm {

class Checkpoint {
 public:
  static std::unique_ptr<Checkpoint> open(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }

  bool has(const std::string& name) const;
  // The raw stored tensor after checking its shape; throws naming the file, tensor, expected and actual
  // shape (or "missing").
  const TensorInfo& tensor(const std::string& name, const Shape& expected_shape) const;
  // The same, converted to float32 (F32/F16/BF16 storage).
  Tensor load_f32(const std::string& name, const Shape& expected_shape) const;
  // Releases the resident pages of every tensor whose (llava_qwen2) name starts with `prefix`: for
  // weights the model has copied into its own layout, so they are not held twice in memory.
  void release(std::string_view prefix) const;
  // The file a tensor lives in, for error messages.
  std::filesystem::path file_of(const std::string& name) const;

 private:
  std::filesystem::path dir_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  struct Entry {
    const TensorInfo* info;
    const SafetensorsFile* file;
  };
  std::map<std::string, Entry, std::less<>> entries_;
  const Entry* lookup(const std::string& name) const;
};

}  // namespace fastvlm
