#pragma once
// The weights of a model directory in the Hugging Face layout: model.safetensors, or the shards listed in
// model.safetensors.index.json. Knows nothing of any model: a model family that stores its tensors under
// several namings passes a renamer, so its code looks tensors up by one name.
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace fastvlm {

// The record `fastvlm quantize` adds to config.json: "quantization": {"type": "q8_0", "group_size": 32}.
// The model's linear weights are then stored block-quantised (layout in core/quant.h); an empty type means
// a dense checkpoint.
struct QuantizationConfig {
  std::string type;  // "", "q8_0" or "q4_0"
  int group_size = 0;
};

// Reads `dir`/config.json's "quantization" record; throws fastvlm::Error naming the key when it is malformed.
QuantizationConfig read_quantization_config(const std::filesystem::path& dir);

// Maps a stored tensor name to the name model code looks it up by.
using TensorRenamer = std::function<std::string(const std::string& stored_name)>;

class Checkpoint {
 public:
  static std::unique_ptr<Checkpoint> open(const std::filesystem::path& dir, const TensorRenamer& rename = {});

  const std::filesystem::path& dir() const { return dir_; }
  const QuantizationConfig& quantization() const { return quantization_; }

  bool has(const std::string& name) const;
  // The raw stored tensor after checking its shape; throws naming the file, tensor, expected and actual
  // shape (or "missing").
  const TensorInfo& tensor(const std::string& name, const Shape& expected_shape) const;
  // The same, converted to float32 (F32/F16/BF16 storage). The copy is the caller's to keep: the tensor's
  // mapped pages are released once it is made (see release), so no weight is held twice.
  Tensor load_f32(const std::string& name, const Shape& expected_shape) const;
  // Releases the resident pages of tensor `name`'s bytes [begin, end) (SafetensorsFile::release), for a
  // weight the model has copied into its own layout, at once or a range at a time, so that a load never
  // holds the whole mapped checkpoint beside the copies.
  void release(const std::string& name, size_t begin = 0, size_t end = SIZE_MAX) const;
  // Copies tensor `name`'s stored bytes to `destination` (its nbytes), releasing the mapped pages piece by
  // piece as they are copied: a weight moved into memory of the model's own never sits there twice.
  void move_into(const std::string& name, void* destination) const;
  // Releases once more every tensor released so far, at the end of a load: on a file with large page-cache
  // folios a fault maps back the whole folio (up to 2 MiB) around it, so reading one weight brings back
  // pages of neighbours released before it (~77 MiB of FastVLM-0.5B's after a load).
  void release_again() const;
  // The file a tensor lives in, for error messages.
  std::filesystem::path file_of(const std::string& name) const;

 private:
  std::filesystem::path dir_;
  QuantizationConfig quantization_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  struct Entry {
    const TensorInfo* info;
    const SafetensorsFile* file;
    mutable bool released = false;  // by release or move_into; each entry is loaded by one thread
  };
  std::map<std::string, Entry, std::less<>> entries_;
  const Entry* lookup(const std::string& name) const;
};

}  // namespace fastvlm
