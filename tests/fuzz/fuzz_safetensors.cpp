// libFuzzer target: a safetensors file (header length, JSON header, data). Every malformed file must be a
// fastvlm::Error; for an accepted one every tensor's bytes must lie in readable memory aligned to its
// element size, which ASan and UBSan check as the floating-point ones are converted.
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "fuzz_files.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fastvlm;
  const auto path = fuzz::write_file("model.safetensors", fuzz::as_text(data, size));
  try {
    const auto file = SafetensorsFile::open(path);
    std::vector<float> converted;
    for (const TensorInfo& tensor : file->tensors()) {
      if (tensor.dtype != DType::F32 && tensor.dtype != DType::F16 && tensor.dtype != DType::BF16) continue;
      converted.resize(tensor.nbytes / dtype_size(tensor.dtype));
      convert_to_f32(tensor.dtype, tensor.data, converted.data(), converted.size());
      file->release(tensor);
    }
  } catch (const Error&) {
  }
  return 0;
}
