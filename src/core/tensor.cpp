#include "core/tensor.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

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

void* allocate_aligned(size_t bytes, const char* what, bool huge_pages) {
  constexpr size_t kHugePage = size_t(2) << 20;
  const size_t alignment = huge_pages && bytes >= kHugePage ? kHugePage : 64;
  const size_t rounded = std::max<size_t>(alignment, (bytes + alignment - 1) / alignment * alignment);
  void* memory = std::aligned_alloc(alignment, rounded);
  if (!memory) throw Error(std::string("out of memory allocating ") + std::to_string(rounded) + " bytes for " + what);
  if (alignment == kHugePage) madvise(memory, rounded, MADV_HUGEPAGE);
  return memory;
}

void Tensor::AlignedFree::operator()(float* p) const { std::free(p); }

Tensor::Tensor(Shape shape) { resize(std::move(shape)); }

void Tensor::resize(Shape shape) {
  for (int64_t d : shape)
    if (d < 0) throw Error("negative tensor dimension in " + shape_string(shape));
  const int64_t numel = shape_numel(shape);
  if (numel > capacity_ || !data_) {
    try {
      data_.reset(static_cast<float*>(allocate_aligned(size_t(numel) * sizeof(float), "a tensor")));
    } catch (const Error&) {  // the shape in the message, formatted only when it is needed
      throw Error("out of memory allocating a tensor of shape " + shape_string(shape));
    }
    capacity_ = numel;
  }
  shape_ = std::move(shape);
  numel_ = numel;
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

void ScratchBuffer::Free::operator()(void* p) const { std::free(p); }

ZeroedPages::ZeroedPages(size_t bytes, const char* what) : bytes_(bytes) {
  if (bytes == 0) return;
  data_ = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data_ == MAP_FAILED) {
    data_ = nullptr;
    throw Error(std::string("out of memory mapping ") + std::to_string(bytes) + " bytes for " + what);
  }
  // Where transparent huge pages are always on, a first write would make a whole 2 MiB resident.
  madvise(data_, bytes, MADV_NOHUGEPAGE);
}

ZeroedPages::ZeroedPages(ZeroedPages&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

// The mapping this held goes with `other`, which unmaps it.
ZeroedPages& ZeroedPages::operator=(ZeroedPages&& other) noexcept {
  std::swap(data_, other.data_);
  std::swap(bytes_, other.bytes_);
  return *this;
}

ZeroedPages::~ZeroedPages() {
  if (data_) munmap(data_, bytes_);
}

}  // namespace fastvlm
