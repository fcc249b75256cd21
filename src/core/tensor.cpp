#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace fastvlm {

std::string shape_string(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void Tensor::AlignedFree::operator()(float* p) const { std::free(p); }

Tensor::Tensor(Shape shape) : shape_(std::move(shape)), numel_(shape_numel(shape_)) {
  for (int64_t d : shape_)
    if (d < 0) throw Error("negative tensor dimension in " + shape_string(shape_));
  size_t bytes = (size_t(numel_) * sizeof(float) + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  auto* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) throw Error("out of memory allocating a tensor of shape " + shape_string(shape_));
  data_.reset(p);
}

Tensor Tensor::zeros(Shape shape) {
  Tensor t(std::move(shape));
  std::memset(t.data(), 0, size_t(t.numel()) * sizeof(float));
  return t;
}

void Tensor::reshape(Shape shape) {
  if (shape_numel(shape) != numel_)
    throw Error("cannot reshape " + shape_string(shape_) + " to " + shape_string(shape));
  shape_ = std::move(shape);
}

}  // namespace fastvlm
