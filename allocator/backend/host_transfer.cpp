// HostBackend's transfers (see host_backend.hpp): pinned memory is plain
// page-aligned host memory, copy streams are host streams, and a copy is a
// memcpy queued on one. Both sides are checked when the copy is queued and
// again when it runs, so a caller that unmaps memory before its copy has
// completed is caught (the process aborts, as a GPU's copy engine faults).
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "allocator/backend/host_backend.hpp"
#include "allocator/backend/host_stream.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {

constexpr std::size_t kPinnedAlignment = 4096;

[[noreturn]] void copy_invalid(const std::string& why) {
  throw DriverError("copy", EINVAL, "host backend copy: " + why + " (invalid value)");
}

}  // namespace

void* HostBackend::alloc_pinned(std::size_t bytes) {
  count(BackendCall::alloc_pinned);
  if (bytes == 0) {
    throw DriverError("alloc_pinned", EINVAL, "host backend alloc_pinned: size 0 (invalid value)");
  }
  const std::size_t rounded = (bytes + kPinnedAlignment - 1) / kPinnedAlignment * kPinnedAlignment;
  if (rounded < bytes) {
    throw DeviceOutOfMemoryError("alloc_pinned", ENOMEM,
                                 "host backend alloc_pinned: size too large (out of memory)");
  }
  void* p = std::aligned_alloc(kPinnedAlignment, rounded);
  if (p == nullptr) {
    throw DeviceOutOfMemoryError(
        "alloc_pinned", ENOMEM,
        "host backend alloc_pinned: " + std::to_string(bytes) + " bytes: out of memory");
  }
  std::lock_guard lock(mutex_);
  pinned_.emplace(reinterpret_cast<std::uintptr_t>(p), bytes);
  pinned_bytes_ += bytes;
  return p;
}

void HostBackend::free_pinned(void* ptr, std::size_t bytes) noexcept {
  if (ptr == nullptr) return;
  {
    std::lock_guard lock(mutex_);
    auto it = pinned_.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (it == pinned_.end() || it->second != bytes) {
      std::fprintf(stderr, "vmmalloc: host backend free_pinned: %p (%zu bytes) was not pinned\n",
                   ptr, bytes);
      std::abort();  // a caller bug: freeing it would corrupt the heap
    }
    pinned_bytes_ -= it->second;
    pinned_.erase(it);
  }
  std::free(ptr);
}

Stream HostBackend::create_copy_stream() {
  count(BackendCall::create_stream);
  return streams_->create();
}

void HostBackend::destroy_copy_stream(Stream stream) noexcept {
  try {
    streams_->destroy(stream);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmmalloc: host backend destroy_copy_stream: %s\n", e.what());
  }
}

bool HostBackend::copyable(std::uintptr_t p, std::size_t bytes) const {
  std::lock_guard lock(mutex_);
  if (fully_mapped_locked(p, bytes)) return true;
  auto it = pinned_.upper_bound(p);
  if (it == pinned_.begin()) return false;
  --it;
  return p >= it->first && p + bytes <= it->first + it->second;
}

void HostBackend::copy(void* dst, const void* src, std::size_t bytes, Stream stream) {
  count(BackendCall::copy);
  const auto d = reinterpret_cast<std::uintptr_t>(dst);
  const auto s = reinterpret_cast<std::uintptr_t>(src);
  if (bytes == 0) copy_invalid("size 0");
  if (!copyable(d, bytes)) copy_invalid("destination is neither mapped nor pinned throughout");
  if (!copyable(s, bytes)) copy_invalid("source is neither mapped nor pinned throughout");
  try {
    streams_->enqueue(stream, [this, dst, src, bytes, d, s] {
      if (!copyable(d, bytes) || !copyable(s, bytes)) {
        std::fprintf(stderr,
                     "vmmalloc: host backend: a queued copy of %zu bytes from %p to %p found its "
                     "memory unmapped (a GPU copy would fault)\n",
                     bytes, src, dst);
        std::abort();
      }
      std::memcpy(dst, src, bytes);
    });
  } catch (const InvalidArgumentError& e) {
    copy_invalid(e.what());
  }
}

}  // namespace vmm
