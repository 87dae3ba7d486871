// vmm::Workspace: a buffer with a stable base address that grows in place.
//
// A workspace reserves `capacity` bytes of virtual address space up front and
// backs a prefix of it with physical memory. grow_to() maps new physical
// chunks at the tail: same base pointer, contents kept, no copy, no wait for
// any GPU work, and it holds at most the new size rounded up to 2 MiB.
// shrink_to() detaches tail chunks; they are unmapped and returned to the
// pool only once the work queued on the given stream has completed, and the
// call itself never waits. Thread-safe: calls on one workspace serialise.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "vmmalloc/tags.hpp"
#include "vmmalloc/vmmalloc.h"

namespace vmm {

using Stream = vmm_stream_t;
class DeviceContext;
class Region;

class VMM_API Workspace {
 public:
  // Reserves `capacity` bytes of address space on `device` (-1: the calling
  // thread's current CUDA device, or 0) from the process-wide allocator.
  // Maps nothing yet. Throws InvalidArgumentError (capacity 0, bad device),
  // OutOfMemoryError (address space), DriverError.
  explicit Workspace(std::size_t capacity, int device = -1);
  // The same over an explicit device context (tests, embedding).
  Workspace(DeviceContext& context, std::size_t capacity);
  // Releases the memory after the work queued on the null stream completes
  // (use release(stream) to name another stream). Never waits.
  ~Workspace();

  Workspace(Workspace&&) noexcept;
  Workspace& operator=(Workspace&&) noexcept;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // Stable base address; valid for the workspace's life.
  void* data() const noexcept;
  // Bytes usable from data(): the last size grown or shrunk to.
  std::size_t size() const noexcept;
  // Maximum size (the reserved address range).
  std::size_t capacity() const noexcept;
  // Physical bytes mapped behind the range (size rounded up to chunks).
  std::size_t mapped_bytes() const noexcept;
  int device() const noexcept;
  // The tag scope open on the constructing thread (vmmalloc/tags.hpp), or 0:
  // the workspace sleeps and wakes with that tag (docs/sleep.md).
  TagId tag() const noexcept;
  // Work on `stream` uses the workspace: a sleep of its tag waits for the
  // work queued there (besides the null stream, always waited for). Call
  // Allocator::release_stream_everywhere (vmm_release_stream) before
  // destroying the stream. Throws InvalidArgumentError once released.
  void record_stream(Stream stream);

  // Grows to `new_size` in place (no-op if not larger). Throws
  // InvalidArgumentError if new_size > capacity(), OutOfMemoryError if memory
  // cannot be had, DriverError; on any throw the workspace is unchanged.
  void grow_to(std::size_t new_size);
  // Shrinks to `new_size` (no-op if not smaller): tail chunks past it are
  // returned once the work queued on `stream` so far completes. Never waits.
  void shrink_to(std::size_t new_size, Stream stream);
  // Gives all memory back after the work queued on `stream` completes; the
  // workspace is empty (capacity 0) afterwards. Never waits.
  void release(Stream stream);

  // A name shown in snapshots and by vmmctl ("" clears it; unnamed by
  // default). Throws InvalidArgumentError if the workspace was released.
  void set_name(std::string_view name);
  std::string name() const;

 private:
  friend class WorkspaceExport;  // shares the region (include/vmmalloc/ipc.hpp)
  std::unique_ptr<Region> region_;
};

}  // namespace vmm
