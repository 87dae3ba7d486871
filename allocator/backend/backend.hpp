// The backend: the only layer that touches the driver.
//
// A small interface over the CUDA driver's virtual memory management:
// reserve/free virtual address ranges, create/release physical handles,
// map/unmap handles into reserved ranges, set access (for the device and its
// peers), export/import handles as POSIX file descriptors (IPC), and fences
// (an event recorded on a stream; query it; wait on that one fence only),
// and the transfers that sleep and wake make (pinned host memory, copy
// streams, asynchronous copies: allocator/vm/transfer.hpp).
//
// Implementations:
//   CudaBackend         - the driver API, loaded at run time (cuda_backend.hpp)
//   HostBackend         - the same semantics in host memory, with host
//                         streams run by worker threads (host_backend.hpp)
//   FaultInjectingBackend - wraps another and fails the Nth call of a kind
//   PeerAccessBackend   - wraps another and grants peers access to every
//                         mapping (allocator/backend/peer_access_backend.hpp)
// The two wrappers derive from ForwardingBackend (forwarding_backend.hpp),
// which forwards every call to the wrapped backend.
//
// Errors: every method may throw DriverError (naming the call), create() may
// throw DeviceOutOfMemoryError. destroy_fence() never throws. A failed call
// changes nothing (a failed map leaves the range unmapped, and so on).
// Implementations are thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "allocator/base/types.hpp"

namespace vmm {

// What a backend holds right now: physical handles, VA reservations and
// mapped bytes. Kept by the backend itself (cheap counters beside each
// driver call), so leak checks need no device-wide memory reading.
struct LiveObjects {
  std::size_t handles = 0;
  std::size_t handle_bytes = 0;
  std::size_t reservations = 0;
  std::size_t reserved_bytes = 0;
  std::size_t mapped_bytes = 0;
  std::size_t pinned_bytes = 0;  // page-locked host memory (alloc_pinned)
  friend bool operator==(const LiveObjects&, const LiveObjects&) = default;
};

struct DeviceMemoryInfo {
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
};

// The kinds of call, for fault injection and driver-call counting.
enum class BackendCall : int {
  reserve,
  free_va,
  create,
  release,
  map,
  unmap,
  set_access,
  record_fence,
  query_fence,
  wait_fence,
  can_access_peer,
  export_handle,
  import_handle,
  alloc_pinned,
  create_stream,
  copy,
  count_  // number of kinds
};
inline constexpr int kBackendCallKinds = static_cast<int>(BackendCall::count_);
const char* backend_call_name(BackendCall call) noexcept;  // "map", "create", ...

class Backend {
 public:
  virtual ~Backend() = default;

  // "cuda" or "host" (a wrapper reports the backend it wraps).
  virtual const char* name() const noexcept = 0;
  // Device ordinal this backend serves.
  virtual int device() const noexcept = 0;
  // Devices the backend's driver offers (ordinals 0 .. n-1, this one
  // included): the candidates for peer access.
  virtual int device_count() const noexcept = 0;
  // Mapping granularity (2 MiB on current GPUs): sizes, offsets and
  // reservation alignments are multiples of it.
  virtual std::size_t granularity() const noexcept = 0;
  // Free and total device memory as the driver reports it (cuMemGetInfo).
  virtual DeviceMemoryInfo memory_info() = 0;
  // The handles, reservations and mappings made through this backend and
  // not yet released, freed or unmapped. Never throws.
  virtual LiveObjects live_objects() const = 0;

  // Reserves `bytes` (a multiple of granularity) of VA aligned to
  // `alignment` (a power of two, >= granularity). Nothing is mapped.
  virtual std::uintptr_t reserve(std::size_t bytes, std::size_t alignment) = 0;
  // Frees a whole reservation made by reserve(); nothing may be mapped in it.
  virtual void free_va(std::uintptr_t base, std::size_t bytes) = 0;

  // Creates a physical handle of `bytes` (a multiple of granularity),
  // exportable as a POSIX file descriptor where the backend can.
  virtual PhysicalHandle create(std::size_t bytes) = 0;
  virtual void release(PhysicalHandle handle) = 0;

  // Maps the whole of `handle` (of `bytes`) at `va` (granularity-aligned,
  // inside a reservation, currently unmapped). Access is not yet granted.
  virtual void map(std::uintptr_t va, std::size_t bytes, PhysicalHandle handle) = 0;
  // Unmaps [va, va+bytes), which must cover whole mappings. Does NOT wait for
  // work that uses the range: the caller must have waited on its fence.
  virtual void unmap(std::uintptr_t va, std::size_t bytes) = 0;
  // Grants the device read/write access to mapped [va, va+bytes).
  virtual void set_access(std::uintptr_t va, std::size_t bytes) = 0;
  // Grants read/write access to mapped [va, va+bytes) to every device in
  // `devices` (this device and/or peers; one driver call, one descriptor per
  // device). Access already granted to devices not listed is kept. A device
  // outside [0, device_count()) or one that cannot reach this device's
  // memory is a DriverError (the driver's CUDA_ERROR_INVALID_DEVICE).
  virtual void set_access(std::uintptr_t va, std::size_t bytes, std::span<const int> devices) = 0;
  // Whether device `peer` can read and write memory of this device
  // (cuDeviceCanAccessPeer; true for this device itself). Throws
  // InvalidArgumentError for a peer outside [0, device_count()).
  virtual bool can_access_peer(int peer) = 0;

  // Exports `handle` as a POSIX file descriptor that another process can
  // import (IPC). The caller owns the descriptor (close it once sent). Throws
  // NotSupportedError where handles are not exportable.
  virtual int export_handle(PhysicalHandle handle) = 0;
  // Imports a handle of `bytes` (a multiple of granularity) from a file
  // descriptor made by export_handle() in this or another process. The
  // descriptor stays the caller's. The result is a handle like create()'s:
  // map it, and release() it (it may be released while mapped: the memory
  // then lives until the last unmap, and until every other process that
  // holds it has let go). Throws DriverError for a descriptor that is not an
  // exported handle of `bytes`.
  virtual PhysicalHandle import_handle(int fd, std::size_t bytes) = 0;

  // Records a fence after the work queued so far on `stream` (0: the legacy
  // default stream). Cheap, never waits.
  virtual FenceHandle record_fence(Stream stream) = 0;
  // True once all work before the fence has completed. Never waits.
  virtual bool fence_completed(FenceHandle fence) = 0;
  // Blocks until the fence completes; waits for nothing else.
  virtual void wait_fence(FenceHandle fence) = 0;
  virtual void destroy_fence(FenceHandle fence) noexcept = 0;

  // Called once on each background thread that will query fences (the
  // reclaimer): makes the device's context current and switches the thread
  // to relaxed stream-capture mode so its queries never break a capture.
  virtual void prepare_background_thread() {}

  // True while `stream` is being captured into a CUDA graph. A fence must not
  // be recorded (and queried) on such a stream: that would end the capture.
  // Never waits. Throws DriverError.
  virtual bool stream_capturing(Stream /*stream*/) { return false; }

  // Whether `stream` is a stream work can be queued on (0 always is): false
  // for a handle never created or already destroyed, as far as the driver
  // can tell. Asked only after a fence could not be recorded on a stream.
  // Never waits. Throws DriverError when the driver cannot say.
  virtual bool stream_exists(Stream /*stream*/) { return true; }
  // Blocks until all work queued so far on every stream of the device has
  // completed (cuCtxSynchronize): what stands in for a fence on a handle that
  // is no stream (StreamUse), so the memory freed on it is reused, never
  // lost. Throws DriverError; NotSupportedError where the backend cannot.
  virtual void synchronize_device();

  // --- Transfers (sleep and wake: allocator/vm/transfer.hpp) -------------
  // Page-locked host memory of `bytes` that the device copies to and from at
  // link speed (cuMemHostAlloc, portable). Throws DriverError
  // (DeviceOutOfMemoryError when the host cannot pin that much).
  virtual void* alloc_pinned(std::size_t bytes) = 0;
  // Frees memory from alloc_pinned(). Never throws.
  virtual void free_pinned(void* ptr, std::size_t bytes) noexcept = 0;
  // A stream of the backend's own, which synchronizes with no other stream
  // (CU_STREAM_NON_BLOCKING). Throws DriverError.
  virtual Stream create_copy_stream() = 0;
  virtual void destroy_copy_stream(Stream stream) noexcept = 0;
  // Queues a copy of `bytes` from `src` to `dst` on `stream`: each is a
  // mapped device address of this backend or pinned host memory from
  // alloc_pinned(). Returns at once; a fence recorded after it on `stream`
  // completes when the copy has. Throws DriverError.
  virtual void copy(void* dst, const void* src, std::size_t bytes, Stream stream) = 0;
};

}  // namespace vmm
