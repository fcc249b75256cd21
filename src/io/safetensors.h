#pragma once
// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON header
// mapping names to {dtype, shape, data_offsets}, then the raw data. Files are memory-mapped and the
// whole header is validated on open, so later accesses need no checks.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace fastvlm {

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  // Valid while the SafetensorsFile lives; aligned to the element size (see SafetensorsFile::open).
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws fastvlm::Error naming the file and the problem: header length past
  // the end of the file or over 100 MB, invalid JSON, unknown dtype, element count not matching the byte
  // range, ranges outside the data area or overlapping. The format does not promise alignment (the header
  // length may be any number), and the kernels load elements as their type: a tensor whose bytes in the
  // mapping are not aligned to its element size is copied once into aligned memory this object owns.
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t file_size() const { return size_; }
  // Drops the resident pages that lie wholly inside `tensor`'s first `end` bytes, except those lying
  // wholly inside its first `begin` bytes, for weights copied into another layout at load time (pages are
  // re-read from the file if touched again). A page shared with a neighbouring tensor is kept. A tensor
  // converted piece by piece releases consecutive ranges [0, a), [a, b), ... as it goes: each page goes
  // with the range that finishes it, so the mapped source never stays resident beyond the piece at hand
  // (and up to 64 KiB before it, which the kernel's fault-around maps back when the next piece is read: a
  // last release of the whole tensor takes those).
  void release(const TensorInfo& tensor, size_t begin = 0, size_t end = SIZE_MAX) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  void* mapping_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::unique_ptr<uint8_t[]>> aligned_copies_;  // see open()
};

// A tensor to write: raw bytes of `dtype` with `shape`.
struct TensorToWrite {
  std::string name;
  DType dtype;
  Shape shape;
  const void* data;
  size_t nbytes;
};

// Writes a safetensors file atomically (to a temporary beside `path`, then rename), so a failure never
// leaves a half-written file under the final name.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Convenience for float tensors.
TensorToWrite f32_tensor(const std::string& name, const Tensor& tensor);

}  // namespace fastvlm
