#pragma once
// Which pages of this process's address space are mapped in, from /proc/self/pagemap's "present" bit
// (readable without privileges): how a test sees that a load gave back a weight's mapped pages, and that
// nothing read them again afterwards. A page released from a file mapping is re-read on the next touch,
// so answers alone cannot show that a released weight is still in use; its pages coming back can.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>

namespace fastvlm {

// Pages lying wholly inside [begin, end) that are present in this process.
inline size_t resident_pages(const void* begin, const void* end) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page;
  const uintptr_t last = reinterpret_cast<uintptr_t>(end) / page;
  const int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open /proc/self/pagemap");
  size_t present = 0;
  for (uintptr_t p = first; p < last; ++p) {
    uint64_t entry = 0;
    if (pread(fd, &entry, sizeof entry, off_t(p * sizeof entry)) != ssize_t(sizeof entry)) {
      close(fd);
      throw std::runtime_error("cannot read /proc/self/pagemap");
    }
    present += entry >> 63;
  }
  close(fd);
  return present;
}

}  // namespace fastvlm
