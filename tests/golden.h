#pragma once
// Reading the fixtures' golden tensors (safetensors, F32 or narrower) as float vectors, for every test.
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/safetensors.h"

namespace fastvlm::fixtures {

// Throws (failing the test) when the file or the tensor is missing.
inline std::vector<float> read_golden(const std::filesystem::path& file, const std::string& name) {
  auto st = SafetensorsFile::open(file);
  const TensorInfo* info = st->find(name);
  if (!info) throw std::runtime_error(file.string() + " has no tensor " + name);
  std::vector<float> values(shape_numel(info->shape));
  convert_to_f32(info->dtype, info->data, values.data(), values.size());
  return values;
}

}  // namespace fastvlm::fixtures
