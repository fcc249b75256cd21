#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_file.h"

namespace fastvlm {
namespace {

// A header this large is not a model header but a corrupt length field.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

DType parse_dtype(const std::string& name, const std::filesystem::path& path, const std::string& tensor) {
  static const std::pair<const char*, DType> known[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"I64", DType::I64},
      {"I32", DType::I32}, {"I8", DType::I8},   {"U8", DType::U8},
  };
  for (const auto& [spelling, dtype] : known)
    if (name == spelling) return dtype;
  throw Error(path.string() + ": tensor '" + tensor + "' has unsupported dtype '" + name +
              "' (expected F32, F16, BF16, I64, I32, I8 or U8)");
}

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw Error(path.string() + ": not a valid safetensors file: " + what);
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path.string() + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path.string() + ": not a regular file");
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->size_ = size_t(st.st_size);
  if (file->size_ < 8) {
    ::close(fd);
    fail(path, "file is " + std::to_string(file->size_) + " bytes, shorter than the 8-byte header length");
  }
  void* mapping = mmap(nullptr, file->size_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (mapping == MAP_FAILED) throw Error(path.string() + ": cannot mmap: " + std::strerror(errno));
  file->mapping_ = mapping;

  const auto* bytes = static_cast<const uint8_t*>(mapping);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
  if (header_len > file->size_ - 8)
    fail(path, "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                   std::to_string(file->size_) + " bytes)");

  const nlohmann::json header =
      parse_json(std::string_view(reinterpret_cast<const char*>(bytes + 8), header_len), path.string() + ": header",
                 JsonLimits{kMaxHeaderBytes, 64});
  if (!header.is_object()) fail(path, "header is not a JSON object");

  const uint8_t* data_start = bytes + 8 + header_len;
  const uint64_t data_size = file->size_ - 8 - header_len;
  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m)
        if (m->is_string()) file->metadata_[m.key()] = m->get<std::string>();
      continue;
    }
    const auto& entry = *it;
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string() || !entry["shape"].is_array() ||
        !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2)
      fail(path, "tensor '" + name + "' lacks a valid dtype, shape or data_offsets");
    TensorInfo info;
    info.name = name;
    info.dtype = parse_dtype(entry["dtype"].get<std::string>(), path, name);
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) fail(path, "tensor '" + name + "' has a non-integer or negative dimension");
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / dim)
        fail(path, "tensor '" + name + "' has an absurd shape");
      numel *= dim;
      info.shape.push_back(int64_t(dim));
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      fail(path, "tensor '" + name + "' has invalid data_offsets");
    uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size)
      fail(path, "tensor '" + name + "' byte range [" + std::to_string(begin) + ", " + std::to_string(end) +
                     ") lies outside the data area of " + std::to_string(data_size) + " bytes");
    uint64_t expected = numel * dtype_size(info.dtype);
    if (end - begin != expected)
      fail(path, "tensor '" + name + "' has shape " + shape_string(info.shape) + " of " +
                     std::string(dtype_name(info.dtype)) + " (" + std::to_string(expected) +
                     " bytes) but its byte range holds " + std::to_string(end - begin) + " bytes");
    info.data = data_start + begin;
    info.nbytes = size_t(end - begin);
    if (reinterpret_cast<uintptr_t>(info.data) % dtype_size(info.dtype) != 0) {
      // new[] of uint8_t is aligned for any fundamental type (alignof(max_align_t) = 16).
      file->aligned_copies_.emplace_back(new uint8_t[std::max<size_t>(info.nbytes, 1)]);
      std::memcpy(file->aligned_copies_.back().get(), info.data, info.nbytes);
      info.data = file->aligned_copies_.back().get();
    }
    ranges.push_back({begin, end, file->tensors_.size()});
    file->tensors_.push_back(std::move(info));
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].begin < ranges[i - 1].end && ranges[i].begin != ranges[i].end)
      fail(path, "tensors '" + file->tensors_[ranges[i - 1].index].name + "' and '" +
                     file->tensors_[ranges[i].index].name + "' overlap");
  for (size_t i = 0; i < file->tensors_.size(); ++i) file->index_[file->tensors_[i].name] = i;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_) munmap(mapping_, size_);
}

void SafetensorsFile::release(const TensorInfo& tensor, size_t begin, size_t end) const {
  const auto* mapping = static_cast<const uint8_t*>(mapping_);
  if (tensor.data < mapping || tensor.data >= mapping + size_) return;  // an aligned copy: nothing mapped
  static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t data = reinterpret_cast<uintptr_t>(tensor.data);
  end = std::min(end, tensor.nbytes);
  const uintptr_t first = std::max((data + page - 1) / page * page, (data + begin) / page * page);
  const uintptr_t last = (data + end) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    uint64_t expected = uint64_t(shape_numel(t.shape)) * dtype_size(t.dtype);
    if (expected != t.nbytes)
      throw Error("write_safetensors: tensor '" + t.name + "' has " + std::to_string(t.nbytes) +
                  " bytes for shape " + shape_string(t.shape));
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // keeps the data area 8-byte aligned

  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(tmp.string() + ": cannot create");
    uint64_t len = header_text.size();
    char len_bytes[8];
    for (int i = 0; i < 8; ++i) len_bytes[i] = char((len >> (8 * i)) & 0xff);
    out.write(len_bytes, 8);
    out.write(header_text.data(), std::streamsize(header_text.size()));
    for (const auto& t : tensors) out.write(static_cast<const char*>(t.data), std::streamsize(t.nbytes));
    out.flush();
    if (!out) {
      out.close();
      std::filesystem::remove(tmp);
      throw Error(tmp.string() + ": write failed (disk full?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    throw Error(path.string() + ": cannot move into place: " + ec.message());
  }
}

TensorToWrite f32_tensor(const std::string& name, const Tensor& tensor) {
  return {name, DType::F32, tensor.shape(), tensor.data(), size_t(tensor.numel()) * sizeof(float)};
}

}  // namespace fastvlm
