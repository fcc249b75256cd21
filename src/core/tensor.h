#pragma once
// A dense, row-major, 64-byte-aligned float tensor. Activations are float32 throughout; weights may
// be stored otherwise (see io/checkpoint.h). Kept deliberately small: shape, data, nothing else.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace fastvlm {

using Shape = std::vector<int64_t>;

std::string shape_string(const Shape& shape);  // "[1, 3, 256, 256]"
int64_t shape_numel(const Shape& shape);

// std::free-able memory of at least `bytes`, 64-byte aligned. With `huge_pages`, blocks of 2 MiB or more
// are aligned to and advised onto transparent huge pages (fewer TLB misses and page faults), for
// long-lived activation arenas; not for short-lived tensors, whose fresh huge pages would each be
// zeroed by the kernel. Throws fastvlm::Error naming `what` when the allocation fails.
void* allocate_aligned(size_t bytes, const char* what, bool huge_pages = false);

// Grow-only scratch of any element type on huge pages, reused from call to call (layers of different widths
// take turns: it never shrinks, and it is never zero-filled). For the activation and product buffers of the
// hot loops, whose TLB misses on 4 KiB pages cost several percent of an image encode.
class ScratchBuffer {
 public:
  template <class T>
  T* as(int64_t count) {
    const size_t bytes = size_t(count) * sizeof(T);
    if (bytes > capacity_) {
      data_.reset(allocate_aligned(bytes, "a scratch buffer", /*huge_pages=*/true));
      capacity_ = bytes;
    }
    return static_cast<T*>(data_.get());
  }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> data_;
  size_t capacity_ = 0;
};

// Zero-filled memory of its own anonymous mapping, whose pages are made resident only as they are first
// written: for buffers sized for the worst case and mostly unused, such as a KV cache with room for the
// whole context (a zero-filled vector would make all of it resident at once). Throws fastvlm::Error naming
// `what` when the mapping fails.
class ZeroedPages {
 public:
  ZeroedPages() = default;
  ZeroedPages(size_t bytes, const char* what);
  ZeroedPages(ZeroedPages&& other) noexcept;
  ZeroedPages& operator=(ZeroedPages&& other) noexcept;
  ~ZeroedPages();

  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised contents: every producer writes all elements.
  explicit Tensor(Shape shape);
  Tensor(std::initializer_list<int64_t> shape) : Tensor(Shape(shape)) {}
  static Tensor zeros(Shape shape);

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  const Shape& shape() const { return shape_; }
  int64_t dim(int axis) const { return shape_.at(axis < 0 ? axis + int(shape_.size()) : axis); }
  int rank() const { return int(shape_.size()); }
  int64_t numel() const { return numel_; }
  bool empty() const { return numel_ == 0; }

  // Same data, new shape with the same element count.
  void reshape(Shape shape);
  // New shape of any element count, contents unspecified; the storage is reused when it is large enough
  // (buffers reused from image to image page-fault only once).
  void resize(Shape shape);

 private:
  struct AlignedFree {
    void operator()(float* p) const;
  };
  Shape shape_;
  int64_t numel_ = 0;
  int64_t capacity_ = 0;  // elements the storage holds
  std::unique_ptr<float[], AlignedFree> data_;
};

}  // namespace fastvlm
