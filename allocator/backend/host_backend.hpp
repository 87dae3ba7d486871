// HostBackend: the CUDA VMM semantics in host memory, a real fake (like
// tcmalloc's FakeVirtualAllocator) that lets every layer above the backend
// run and be tested on machines without a GPU. It is also the default
// backend where no GPU is present.
//
//   reserve     mmap(PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE),
//               over-allocated and trimmed to the requested alignment
//   create      memfd_create + ftruncate, sealed at that size (F_SEAL_SHRINK,
//               F_SEAL_GROW, F_SEAL_SEAL; pages materialise on first touch),
//               against a simulated device capacity (Options::device_memory)
//   map         mmap(MAP_SHARED|MAP_FIXED) of the memfd, PROT_NONE: like
//               cuMemMap, mapping grants no access yet
//   set_access  mprotect(PROT_READ|PROT_WRITE); the devices granted are
//               recorded per mapping (access_devices(), for tests)
//   peers       simulated: Options::device_count devices share the host's
//               memory, so every one can reach every other, except those
//               listed in Options::unreachable_peers
//   export      a dup of the handle's memfd (sendable with SCM_RIGHTS)
//   import      a dup of the received memfd, checked to carry those seals
//               and to be `bytes` long (anything else could shrink under
//               the mapping: SIGBUS)
//   unmap       the range becomes PROT_NONE anonymous memory again: the VA
//               stays reserved and a use-after-unmap faults (SIGSEGV)
//   streams     a host stream is a worker thread running queued host work in
//               FIFO order; a fence completes once the work queued on its
//               stream before it has run
//
// The backend checks what the driver checks (CUDA_ERROR_INVALID_VALUE): a map
// outside a reservation or over a mapped range, an unmap that splits a
// mapping, a free_va with mappings inside, unknown handles and fences. Each
// such misuse throws DriverError naming the backend call ("map", "free_va")
// with code EINVAL, and changes nothing. Physical handle values are never
// reused (not the fd number), so a use after release is always detected.
//
// Thread-safety: every method may be called from any thread.
//   mutex_          guards the reservation, mapping and handle tables and the
//                   byte counters, and is held across the mmap/munmap/mprotect
//                   calls that change the VA layout, so each check-then-change
//                   is atomic
//   fences_mutex_   guards the fence table
//   HostStreams     has its own table mutex; each host stream has a mutex for
//                   its queue and counters (see host_backend.cpp)
//   calls_          atomic counters, no lock
// No two of these locks are ever held at once.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "allocator/backend/backend.hpp"
#include "allocator/base/units.hpp"

namespace vmm {

class HostStream;  // one worker thread and its queue (host_backend.cpp)

// A set of host streams. One HostBackend makes its own; several backends may
// share one set (HostTestDevice does), so a stream made through any of them
// can be used with all of them - as CUDA streams are shared by every
// allocator of a context. The null stream (0) is the set's default stream,
// created on first use.
//
// Passing a stream that was not made by this set (or was destroyed) is a
// programming error; the host-stream methods detect it and throw
// InvalidArgumentError.
class HostStreams {
 public:
  HostStreams();
  // Runs every stream's queued work to completion and joins the workers.
  ~HostStreams();
  HostStreams(const HostStreams&) = delete;
  HostStreams& operator=(const HostStreams&) = delete;

  // A new stream with its own worker thread. The value is the host stream
  // object's address cast to CUstream_st*, never 0.
  Stream create();
  // Waits for the work queued on `stream`, then joins its worker. Fences
  // recorded on it stay valid (and are complete). Throws InvalidArgumentError
  // for an unknown stream, the default stream (0), or when called from the
  // stream's own worker (it would wait for itself).
  void destroy(Stream stream);
  // Queues `work` on `stream`; it runs after everything queued before it.
  // Work must not throw; if it does, the stream records the first exception
  // and synchronize() rethrows it. Throws InvalidArgumentError.
  void enqueue(Stream stream, std::function<void()> work);
  // Waits until everything queued on `stream` so far has run; rethrows (and
  // clears) the first exception a work item threw. Throws InvalidArgumentError
  // (also when called from the stream's own work: it would wait for itself).
  void synchronize(Stream stream);
  // Streams made by create() and not destroyed (the default stream excluded).
  std::size_t live_streams() const;
  // Whether `stream` is 0 or made by create() and not destroyed.
  bool exists(Stream stream) const;
  // Waits until the work queued so far on every stream has run (errors stay
  // for synchronize() to report). A stream's own worker skips its stream.
  void synchronize_all();

  // The stream object, for fences. Throws InvalidArgumentError.
  std::shared_ptr<HostStream> find(Stream stream);

 private:
  mutable std::mutex mutex_;  // guards streams_ and default_
  std::unordered_map<Stream, std::shared_ptr<HostStream>> streams_;
  std::shared_ptr<HostStream> default_;
};

// Options at namespace scope (aliased as HostBackend::Options) so that their
// default member initializers can be used in HostBackend's default argument.
struct HostBackendOptions {
  int device = 0;
  // Devices the simulated driver offers (1 to 64, more than `device`), or 0
  // for just enough: device + 1.
  int device_count = 0;
  // Devices that cannot reach this device's memory (can_access_peer false,
  // set_access naming them fails as the driver's would).
  std::vector<int> unreachable_peers;
  // A power of two and a multiple of the host page size.
  std::size_t granularity = 2 * MiB;
  // Simulated device capacity: create() fails once handles alive would
  // exceed it. Pages are only materialised where they are touched.
  std::size_t device_memory = 16 * GiB;
  // Streams shared with other backends; null: the backend makes its own.
  std::shared_ptr<HostStreams> streams;
};

class HostBackend final : public Backend {
 public:
  using Options = HostBackendOptions;

  // Throws InvalidArgumentError for a bad granularity, device or
  // device_count.
  explicit HostBackend(Options options = {});
  // Joins the backend's own streams (running their queued work), then frees
  // whatever is left: fences, mappings, reservations, handles. Work queued on
  // shared streams is the streams' owner's business: it must not touch this
  // backend's memory after this point (it would fault, as on a GPU).
  ~HostBackend() override;
  HostBackend(const HostBackend&) = delete;
  HostBackend& operator=(const HostBackend&) = delete;

  // --- Backend -----------------------------------------------------------
  const char* name() const noexcept override { return "host"; }
  int device() const noexcept override { return options_.device; }
  int device_count() const noexcept override { return device_count_; }
  std::size_t granularity() const noexcept override { return options_.granularity; }
  // total = Options::device_memory, free = total - bytes of handles alive
  // (a handle released while mapped stays alive until its last unmap).
  DeviceMemoryInfo memory_info() override;
  LiveObjects live_objects() const override;

  // Throws DriverError (EINVAL) for a size that is 0 or not a multiple of
  // the granularity or an alignment that is not a power of two (0 means the
  // granularity; smaller ones are raised to it), DriverError (ENOMEM) when
  // the host has no VA left.
  std::uintptr_t reserve(std::size_t bytes, std::size_t alignment) override;
  // [base, base+bytes) must be exactly one reservation with nothing mapped.
  void free_va(std::uintptr_t base, std::size_t bytes) override;

  // Throws DeviceOutOfMemoryError when the handles alive would exceed
  // Options::device_memory.
  PhysicalHandle create(std::size_t bytes) override;
  // Releasing a mapped handle defers the free until its last unmap, as CUDA
  // does; the handle value is invalid from now on either way.
  void release(PhysicalHandle handle) override;

  void map(std::uintptr_t va, std::size_t bytes, PhysicalHandle handle) override;
  // Every byte of the range must be mapped and it may not split a mapping.
  void unmap(std::uintptr_t va, std::size_t bytes) override;
  // Every byte of the range must be mapped.
  void set_access(std::uintptr_t va, std::size_t bytes) override;
  // The same for each listed device; a device outside [0, device_count) or
  // listed in Options::unreachable_peers is a DriverError (EINVAL), and
  // nothing changes.
  void set_access(std::uintptr_t va, std::size_t bytes, std::span<const int> devices) override;
  bool can_access_peer(int peer) override;
  // A new descriptor (close-on-exec) of the handle's memfd. An unknown or
  // released handle is a DriverError (EINVAL).
  int export_handle(PhysicalHandle handle) override;
  // Keeps a duplicate of `fd`, which must be a memfd of exactly `bytes`
  // sealed as create() seals it, and not against writing (DriverError,
  // EINVAL, otherwise: nothing is kept). Imported bytes count in
  // live_objects() but not against Options::device_memory: the memory
  // belongs to the exporter's device.
  PhysicalHandle import_handle(int fd, std::size_t bytes) override;

  // An unknown stream or fence is a DriverError (EINVAL), as
  // CUDA_ERROR_INVALID_HANDLE would be.
  FenceHandle record_fence(Stream stream) override;
  bool fence_completed(FenceHandle fence) override;
  void wait_fence(FenceHandle fence) override;
  // An unknown fence is ignored.
  void destroy_fence(FenceHandle fence) noexcept override;
  // Whether set_stream_capturing() marked `stream` as capturing.
  bool stream_capturing(Stream stream) override;
  // 0 and the streams of create_stream() not yet destroyed.
  bool stream_exists(Stream stream) override { return streams_->exists(stream); }
  // Waits for every stream's work so far (HostStreams::synchronize_all).
  void synchronize_device() override { streams_->synchronize_all(); }

  // Transfers (host_transfer.cpp): pinned memory is plain host memory,
  // copy streams are host streams, a copy is a memcpy queued on one. Each
  // side of a copy must be mapped (every byte) or inside one pinned
  // allocation when queued (DriverError, EINVAL, otherwise), and still be
  // when the copy runs: a copy whose memory was unmapped meanwhile aborts
  // the process, as a GPU's copy engine faults on unmapped memory.
  void* alloc_pinned(std::size_t bytes) override;
  void free_pinned(void* ptr, std::size_t bytes) noexcept override;
  Stream create_copy_stream() override;
  void destroy_copy_stream(Stream stream) noexcept override;
  void copy(void* dst, const void* src, std::size_t bytes, Stream stream) override;

  // --- Simulated CUDA-graph capture (tests) --------------------------------
  // Marks `stream` as being captured (or no longer). While it is, recording
  // a fence on it fails with DriverError (EPERM), as recording then querying
  // an event on a capturing CUDA stream invalidates the capture; host work
  // queued on it still runs (the host has no graphs).
  void set_stream_capturing(Stream stream, bool capturing);

  // --- Host streams (see HostStreams) ------------------------------------
  Stream create_stream() { return streams_->create(); }
  void destroy_stream(Stream stream) { streams_->destroy(stream); }
  void enqueue(Stream stream, std::function<void()> work) {
    streams_->enqueue(stream, std::move(work));
  }
  void synchronize(Stream stream) { streams_->synchronize(stream); }
  const std::shared_ptr<HostStreams>& streams() const noexcept { return streams_; }

  // --- For tests -----------------------------------------------------------
  // Calls made of each kind, failed ones included (fence_completed counts as
  // query_fence).
  std::uint64_t calls(BackendCall kind) const noexcept;
  // Handles created and not yet released.
  std::size_t live_handles() const;
  // Bytes of handles alive (released-but-mapped ones included).
  std::size_t created_bytes() const;
  std::size_t live_reservations() const;
  std::size_t mapped_bytes() const;
  std::size_t live_fences() const;
  // Devices granted access to the mapping that contains `va`, ascending
  // (empty if `va` is not mapped).
  std::vector<int> access_devices(std::uintptr_t va) const;

 private:
  struct Handle {
    int fd = -1;
    std::size_t bytes = 0;
    int map_count = 0;
    bool released = false;  // by the caller; freed at the last unmap
    bool imported = false;  // by import_handle: not charged to device_memory
  };
  struct Mapping {
    std::size_t bytes = 0;
    std::uint64_t handle = 0;
    std::uint64_t access = 0;  // bit d: device d granted access
  };
  struct Fence;

  void count(BackendCall kind) noexcept;
  // Closes the handle's fd and drops it. Lock held.
  void free_handle_locked(std::unordered_map<std::uint64_t, Handle>::iterator it);
  // True if every byte of [va, va+bytes) is mapped. Lock held.
  bool fully_mapped_locked(std::uintptr_t va, std::size_t bytes) const;
  // Whether `peer` (a valid ordinal) can reach this device's memory.
  bool can_reach(int peer) const noexcept;
  // The work of set_access for the devices in `mask` (bit d: device d);
  // takes the lock. The caller counts the call.
  void grant(std::uintptr_t va, std::size_t bytes, std::uint64_t mask);
  // A copy of the fence's state. Throws DriverError for an unknown fence.
  Fence fence_state(FenceHandle fence, BackendCall call) const;
  // Whether [p, p+bytes) is mapped device memory or inside one pinned
  // allocation. Takes the lock.
  bool copyable(std::uintptr_t p, std::size_t bytes) const;

  const Options options_;
  const int device_count_;  // Options::device_count, 0 resolved
  std::shared_ptr<HostStreams> streams_;
  const bool owns_streams_;

  mutable std::mutex mutex_;
  std::map<std::uintptr_t, std::size_t> reservations_;  // base -> bytes
  std::map<std::uintptr_t, Mapping> mappings_;          // va -> mapping
  std::unordered_map<std::uint64_t, Handle> handles_;   // value -> handle
  std::uint64_t next_handle_ = 1;
  std::size_t live_handles_ = 0;
  std::size_t created_bytes_ = 0;   // handles made by create(), alive
  std::size_t imported_bytes_ = 0;  // handles made by import_handle(), alive
  std::size_t mapped_bytes_ = 0;
  std::map<std::uintptr_t, std::size_t> pinned_;  // alloc_pinned: address -> bytes
  std::size_t pinned_bytes_ = 0;

  mutable std::mutex fences_mutex_;
  std::unordered_map<Fence*, std::unique_ptr<Fence>> fences_;
  std::vector<Stream> capturing_;  // guarded by fences_mutex_

  std::array<std::atomic<std::uint64_t>, kBackendCallKinds> calls_{};
};

}  // namespace vmm
