// Transfers between device memory and pinned host memory, for sleep and
// wake (docs/sleep.md).
//
// PinnedBuffer owns page-locked host memory (Backend::alloc_pinned).
// copy_runs() moves a list of device ranges to or from one pinned buffer at
// link speed: each range is cut into pieces of at most kPieceBytes, the
// pieces are queued round robin on kStreams copy streams of the backend's
// own (so several copies are in flight and each is large), and the call
// returns once every piece has completed. It waits on its own streams'
// fences only. If queuing or waiting fails, it still waits for every piece
// already queued before it rethrows, so the caller may free or unmap the
// memory at once either way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "allocator/backend/backend.hpp"
#include "vmmalloc/tags.hpp"

namespace vmm {

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  // Throws what Backend::alloc_pinned throws.
  PinnedBuffer(Backend& backend, std::size_t bytes);
  ~PinnedBuffer() { reset(); }
  PinnedBuffer(PinnedBuffer&& o) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return bytes_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }
  void reset() noexcept;

 private:
  Backend* backend_ = nullptr;
  std::byte* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// A device range and where its bytes sit in the host buffer.
struct CopyRun {
  std::uintptr_t device = 0;
  std::size_t bytes = 0;
  std::size_t host_offset = 0;
};

enum class CopyDirection { to_host, to_device };

inline constexpr std::size_t kTransferPieceBytes = std::size_t{64} << 20;
inline constexpr int kTransferStreams = 4;

// Copies every run between the device and `host` (which holds each run at
// its host_offset) and waits for all of it; adds the bytes copied and the
// seconds it took to `report` (copied_bytes, copy_seconds). Throws
// DriverError (after waiting for what was queued; `report` unchanged).
void copy_runs(Backend& backend, std::span<const CopyRun> runs, std::byte* host,
               CopyDirection direction, SleepReport& report);

}  // namespace vmm
