#include "io/checkpoint.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/json_file.h"

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

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
}

// The llava_qwen2 name of a tensor of the transformers-native fast_vlm layout. There the FastViT modules
// are grouped per stage (stages.S.{pos_emb,blocks,downsample}); the original numbers them in one
// `network` list in build order: [RepCPE,] blocks, [PatchEmbed] for each stage.
std::string llava_name(std::string name, const VisionConfig& vision) {
  auto take_prefix = [&name](std::string_view from, std::string_view to) {
    if (name.rfind(from, 0) != 0) return false;
    name = std::string(to) + name.substr(from.size());
    return true;
  };
  if (take_prefix("model.language_model.", "model.") || take_prefix("language_model.model.", "model.")) return name;
  if (take_prefix("model.multi_modal_projector.linear_1.", "model.mm_projector.0.") ||
      take_prefix("model.multi_modal_projector.linear_2.", "model.mm_projector.2."))
    return name;
  if (!take_prefix("model.vision_tower.timm_model.", "")) return name;

  // network index of each stage's modules
  std::vector<int> pos_emb_index(vision.num_stages(), -1), blocks_index(vision.num_stages()),
      downsample_index(vision.num_stages(), -1);
  for (int stage = 0, n = 0; stage < vision.num_stages(); ++stage) {
    if (vision.pos_emb_kernel[stage]) pos_emb_index[stage] = n++;
    blocks_index[stage] = n++;
    if (vision.has_patch_embed_after(stage)) downsample_index[stage + 1] = n++;
  }
  if (name.rfind("stages.", 0) == 0) {
    size_t dot = name.find('.', 7);
    int stage = std::stoi(name.substr(7, dot - 7));
    std::string rest = name.substr(dot + 1);
    if (stage < 0 || stage >= vision.num_stages()) return name;
    auto network = [](int index) { return "network." + std::to_string(index) + "."; };
    if (rest.rfind("blocks.", 0) == 0 && blocks_index[stage] >= 0) {
      name = network(blocks_index[stage]) + rest.substr(7);
    } else if (rest.rfind("pos_emb.", 0) == 0 && pos_emb_index[stage] >= 0) {
      name = network(pos_emb_index[stage]) + rest.substr(8);
    } else if (rest.rfind("downsample.", 0) == 0 && downsample_index[stage] >= 0) {
      name = network(downsample_index[stage]) + rest.substr(11);
      replace_all(name, ".proj.0.reparam_conv.", ".proj.0.lkb_reparam.");
    }
  }
  take_prefix("stem.", "patch_embed.") || take_prefix("final_conv.", "conv_exp.");
  replace_all(name, ".se.fc1.", ".se.reduce.");
  replace_all(name, ".se.fc2.", ".se.expand.");
  replace_all(name, ".mlp.", ".convffn.");
  for (const char* scale : {"layer_scale", "layer_scale_1", "layer_scale_2"})
    if (name.size() > 6 && name.ends_with(std::string(".") + scale + ".gamma")) name.resize(name.size() - 6);
  return "model.vision_tower.vision_tower.model." + name;
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

std::unique_ptr<Checkpoint> Checkpoint::open(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) throw Error(dir.string() + ": not a model directory");
  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  checkpoint->dir_ = dir;
  checkpoint->config_ = load_model_config(dir);

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
      const std::string name = checkpoint->config_.layout == CheckpointLayout::FastVlm
                                   ? llava_name(info.name, checkpoint->config_.vision)
                                   : info.name;
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

void Checkpoint::release(std::string_view prefix) const {
  for (auto it = entries_.lower_bound(prefix); it != entries_.end() && it->first.starts_with(prefix); ++it)
    it->second.file->release(*it->second.info);
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
  return out;
}

}  // namespace fastvlm
