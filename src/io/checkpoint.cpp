#include "io/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/json_file.h"
#include "io/config_keys.h"

namespace fastvlm {
namespace {

// The shard files named by model.safetensors.index.json's weight_map, in a stable order.
std::vector<std::string> shards_from_index(const std::filesystem::path& index_path) {
  const nlohmann::json index = read_json_file(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    throw Error(index_path.string() + ": expected an object with a 'weight_map' object");
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) throw Error(index_path.string() + ": weight_map entry '" + tensor + "' is not a file name");
    const std::string name = shard.get<std::string>();
    if (name.find('/') != std::string::npos || name == "..")
      throw Error(index_path.string() + ": weight_map entry '" + tensor + "' points outside the model directory");
    shards.insert(name);
  }
  return {shards.begin(), shards.end()};
}

// Equal up to dimensions of size 1: [C] and [C, 1, 1] hold the same data (layer scales differ so
// between layouts).
bool same_data_layout(const Shape& a, const Shape& b) {
  Shape a_squeezed, b_squeezed;
  for (int64_t d : a)
    if (d != 1) a_squeezed.push_back(d);
  for (int64_t d : b)
    if (d != 1) b_squeezed.push_back(d);
  return a_squeezed == b_squeezed;
}

}  // namespace

QuantizationConfig read_quantization_config(const std::filesystem::path& dir) {
  const auto file = dir / "config.json";
  const nlohmann::json root = read_json_file(file);
  ConfigKeys keys(root, file);
  QuantizationConfig config;
  if (!keys.has("quantization")) return config;
  const ConfigKeys quant = keys.nested("quantization");
  config.type = quant.string("type", "");
  if (config.type != "q8_0" && config.type != "q4_0") quant.fail("type", "\"q8_0\" or \"q4_0\"");
  config.group_size = quant.integer("group_size", 0);
  if (config.group_size != 32) quant.fail("group_size", "32");
  return config;
}

std::unique_ptr<Checkpoint> Checkpoint::open(const std::filesystem::path& dir, const TensorRenamer& rename) {
  if (!std::filesystem::is_directory(dir)) throw Error(dir.string() + ": not a model directory");
  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  checkpoint->dir_ = dir;
  checkpoint->quantization_ = read_quantization_config(dir);

  std::vector<std::string> files;
  const auto single = dir / "model.safetensors";
  const auto index = dir / "model.safetensors.index.json";
  if (std::filesystem::exists(single)) {
    files.push_back("model.safetensors");
  } else if (std::filesystem::exists(index)) {
    files = shards_from_index(index);
  } else {
    throw Error(dir.string() + ": no model.safetensors or model.safetensors.index.json");
  }
  for (const auto& name : files) {
    auto file = SafetensorsFile::open(dir / name);
    for (const auto& info : file->tensors()) {
      const std::string name = rename ? rename(info.name) : info.name;
      auto [it, inserted] = checkpoint->entries_.emplace(name, Entry{&info, file.get()});
      if (!inserted)
        throw Error(file->path().string() + ": tensor '" + info.name + "' is also in " + it->second.file->path().string());
    }
    checkpoint->files_.push_back(std::move(file));
  }
  return checkpoint;
}

const Checkpoint::Entry* Checkpoint::lookup(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

void Checkpoint::release(const std::string& name, size_t begin, size_t end) const {
  if (const Entry* entry = lookup(name)) {
    entry->file->release(*entry->info, begin, end);
    entry->released = true;
  }
}

void Checkpoint::release_again() const {
  for (const auto& [name, entry] : entries_)
    if (entry.released) entry.file->release(*entry.info);
}

void Checkpoint::move_into(const std::string& name, void* destination) const {
  const Entry* entry = lookup(name);
  if (!entry) throw Error(dir_.string() + ": tensor '" + name + "' is missing");
  constexpr size_t kPieceBytes = size_t(8) << 20;
  const TensorInfo& info = *entry->info;
  // Each piece is copied by all threads, 1 MiB apiece: a copy into fresh memory costs its page faults and
  // the kernel's zeroing as much as the bytes (a 7B q8 checkpoint moves 7.5 GB).
  constexpr size_t kShareBytes = size_t(1) << 20;
  for (size_t done = 0; done < info.nbytes; done += kPieceBytes) {
    const size_t piece = std::min(kPieceBytes, info.nbytes - done);
    const int64_t shares = int64_t((piece + kShareBytes - 1) / kShareBytes);
#pragma omp parallel for schedule(static)
    for (int64_t share = 0; share < shares; ++share) {
      const size_t offset = done + size_t(share) * kShareBytes;
      std::memcpy(static_cast<uint8_t*>(destination) + offset, info.data + offset,
                  std::min(kShareBytes, done + piece - offset));
    }
    entry->file->release(info, done, done + piece);
  }
  // Once more as a whole: reading a piece maps back, by the kernel's fault-around, up to 64 KiB of the
  // released pages just before it.
  entry->file->release(info);
  entry->released = true;
}

bool Checkpoint::has(const std::string& name) const { return lookup(name) != nullptr; }

std::filesystem::path Checkpoint::file_of(const std::string& name) const {
  const Entry* entry = lookup(name);
  return entry ? entry->file->path() : dir_;
}

const TensorInfo& Checkpoint::tensor(const std::string& name, const Shape& expected_shape) const {
  const Entry* entry = lookup(name);
  if (!entry)
    throw Error(dir_.string() + ": tensor '" + name + "' is missing (expected shape " + shape_string(expected_shape) + ")");
  if (!same_data_layout(entry->info->shape, expected_shape))
    throw Error(entry->file->path().string() + ": tensor '" + entry->info->name + "' has shape " + shape_string(entry->info->shape) +
                ", expected " + shape_string(expected_shape));
  return *entry->info;
}

Tensor Checkpoint::load_f32(const std::string& name, const Shape& expected_shape) const {
  const TensorInfo& info = tensor(name, expected_shape);
  if (info.dtype != DType::F32 && info.dtype != DType::F16 && info.dtype != DType::BF16)
    throw Error(file_of(name).string() + ": tensor '" + name + "' is " + std::string(dtype_name(info.dtype)) +
                ", expected a floating-point type (F32, F16, BF16)");
  Tensor out(expected_shape);
  convert_to_f32(info.dtype, info.data, out.data(), size_t(out.numel()));
  release(name);
  return out;
}

}  // namespace fastvlm
