// StreamRegistry: the streams the program created in a device's primary
// context (seen at cuStreamCreate / cuStreamCreateWithPriority, which
// cudaStreamCreate* reach too), until it destroys them.
//
// cudaFree's guarantee needs them: work queued on ANY stream before the
// free may still use the memory. A fence on the legacy stream covers the
// legacy stream and every blocking stream (the legacy stream waits for them),
// so only the non-blocking streams need fences of their own; the registry
// lists them per device. It also remembers the handles it handed to
// vmmalloc's release_stream at their destruction: CUDA reuses stream
// handles, and a new stream with a released handle must be made known to
// vmmalloc again.
//
// Thread-safety: one shared_mutex. cudaFree reads the non-blocking list
// under the shared lock for the whole of its free (with_nonblocking), and a
// destroy holds the exclusive lock while it releases the stream (remove),
// so no free can name a stream that vmmalloc has already released.
#pragma once

#include <array>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "vmmalloc/vmmalloc.h"

namespace vmm::preload {

inline constexpr int kMaxDevices = 64;  // vmmalloc's limit too

class StreamRegistry {
 public:
  struct Info {
    int device = 0;
    bool nonblocking = false;
  };

  // Records a new stream. Returns true if its handle was released to
  // vmmalloc (on the same device) when an earlier stream with the same
  // handle was destroyed.
  bool add(vmm_stream_t stream, Info info);
  // Calls fn(span of the device's non-blocking streams) under the shared lock.
  template <typename Fn>
  void with_nonblocking(int device, Fn&& fn) const {
    std::shared_lock lock(mutex_);
    fn(std::span<const vmm_stream_t>(nonblocking_[static_cast<std::size_t>(device)]));
  }
  // Forgets `stream`; if it was known, calls release(info) under the
  // exclusive lock and returns its info. `release` returns whether it
  // released the handle to vmmalloc (remembered for add()).
  template <typename Fn>
  std::optional<Info> remove(vmm_stream_t stream, Fn&& release) {
    std::unique_lock lock(mutex_);
    std::optional<Info> info = erase_locked(stream);
    if (info && release(*info)) released_[stream] = info->device;
    return info;
  }
  // Forgets every stream of `device` (its context is being reset).
  void remove_device(int device);
  std::size_t created() const;  // streams recorded so far

 private:
  std::optional<Info> erase_locked(vmm_stream_t stream);

  mutable std::shared_mutex mutex_;
  std::unordered_map<vmm_stream_t, Info> streams_;
  std::array<std::vector<vmm_stream_t>, kMaxDevices> nonblocking_;
  std::unordered_map<vmm_stream_t, int> released_;  // handle -> device
  std::size_t created_ = 0;
};

}  // namespace vmm::preload
