// CudaBackend: the Backend interface over the CUDA driver's VMM API for one
// device, through the run-time-loaded driver table (cuda_driver.hpp).
//
// It retains the device's PRIMARY context, the one the CUDA runtime, PyTorch
// and CuPy use, so memory it maps is usable by their kernels. Each method
// makes that context current on the calling thread if it is not, and puts
// the caller's previous context back before returning: the runtime derives
// its "current device" from the current context, so leaving ours bound
// would silently move the caller's later launches to our device. In the
// common case (the primary context of this device is already current) that
// costs one cuCtxGetCurrent.
//
// Physical handles are CU_MEM_ALLOCATION_TYPE_PINNED device memory, asked to
// be exportable as POSIX file descriptors (for IPC); where the driver refuses
// that handle type, handles are created without it from then on (and
// export_handle() is NotSupportedError). Peers are named by ordinal; access
// descriptors carry the CUdevice of each (looked up once, at construction).
// Fences are
// CUevents created with CU_EVENT_DISABLE_TIMING and recycled through a small
// free list, since event creation costs a driver round trip.
//
// Thread-safety: every method may be called from any thread. The driver
// calls are thread-safe; events_mutex_ guards the event free list;
// objects_mutex_ the live-object counts; the exportable flag is atomic.
// Nothing else changes after construction.
#pragma once

#include <cuda.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "allocator/backend/backend.hpp"
#include "allocator/backend/cuda_driver.hpp"

namespace vmm {

class CudaBackend final : public Backend {
 public:
  // Loads the driver and retains the primary context of device `ordinal`.
  // Throws NotSupportedError if the driver is unusable or the device lacks
  // VMM support (or reports a granularity that is not a power of two),
  // InvalidArgumentError for an ordinal that does not exist, DriverError.
  explicit CudaBackend(int ordinal);
  // Destroys the cached events and releases the primary context. Tolerates
  // a driver already shut down (CUDA_ERROR_DEINITIALIZED at process exit).
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const char* name() const noexcept override { return "cuda"; }
  int device() const noexcept override { return ordinal_; }
  int device_count() const noexcept override { return static_cast<int>(peers_.size()); }
  // cuMemGetAllocationGranularity(RECOMMENDED): 2 MiB on current GPUs.
  std::size_t granularity() const noexcept override { return granularity_; }
  DeviceMemoryInfo memory_info() override;
  LiveObjects live_objects() const override;

  std::uintptr_t reserve(std::size_t bytes, std::size_t alignment) override;
  void free_va(std::uintptr_t base, std::size_t bytes) override;
  // Throws DeviceOutOfMemoryError on CUDA_ERROR_OUT_OF_MEMORY.
  PhysicalHandle create(std::size_t bytes) override;
  void release(PhysicalHandle handle) override;
  void map(std::uintptr_t va, std::size_t bytes, PhysicalHandle handle) override;
  void unmap(std::uintptr_t va, std::size_t bytes) override;
  // Read/write for this device only (peers are not granted).
  void set_access(std::uintptr_t va, std::size_t bytes) override;
  // One cuMemSetAccess with a descriptor per listed device.
  void set_access(std::uintptr_t va, std::size_t bytes, std::span<const int> devices) override;
  // cuDeviceCanAccessPeer(peer, this device).
  bool can_access_peer(int peer) override;
  // cuMemExportToShareableHandle(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR).
  int export_handle(PhysicalHandle handle) override;
  // cuMemImportFromShareableHandle(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR).
  PhysicalHandle import_handle(int fd, std::size_t bytes) override;

  // An event recorded on `stream` (any stream of this device's primary
  // context; 0 is the legacy default stream).
  FenceHandle record_fence(Stream stream) override;
  // cuEventQuery: CUDA_SUCCESS -> true, CUDA_ERROR_NOT_READY -> false, any
  // other result throws DriverError.
  bool fence_completed(FenceHandle fence) override;
  // cuEventSynchronize on this event only.
  void wait_fence(FenceHandle fence) override;
  // Returns the event to the free list (or destroys it if the list is full).
  void destroy_fence(FenceHandle fence) noexcept override;

  // Binds the primary context to the calling thread for good and switches
  // the thread to CU_STREAM_CAPTURE_MODE_RELAXED, so its fence queries never
  // invalidate another thread's stream capture.
  void prepare_background_thread() override;

  // cuStreamIsCapturing: true for CU_STREAM_CAPTURE_STATUS_ACTIVE (and for
  // an invalidated capture, which has not ended yet).
  bool stream_capturing(Stream stream) override;
  // cuStreamIsCapturing answering CUDA_ERROR_INVALID_HANDLE: not a stream.
  bool stream_exists(Stream stream) override;
  // cuCtxSynchronize on this device's context (fails while a stream of the
  // context is being captured; the caller then tries again later).
  void synchronize_device() override;

  // cuMemHostAlloc(CU_MEMHOSTALLOC_PORTABLE) / cuMemFreeHost.
  void* alloc_pinned(std::size_t bytes) override;
  void free_pinned(void* ptr, std::size_t bytes) noexcept override;
  // cuStreamCreate(CU_STREAM_NON_BLOCKING) / cuStreamDestroy.
  Stream create_copy_stream() override;
  void destroy_copy_stream(Stream stream) noexcept override;
  // cuMemcpyAsync (unified addressing: device VA and pinned host alike).
  void copy(void* dst, const void* src, std::size_t bytes, Stream stream) override;

  // Whether new handles are exportable as POSIX file descriptors.
  bool exportable_handles() const noexcept { return exportable_.load(std::memory_order_relaxed); }
  CUcontext context() const noexcept { return context_; }
  CUdevice cu_device() const noexcept { return device_; }

 private:
  class CurrentContext;  // scoped "make ours current, then restore"
  class RelaxedCapture;  // scoped "relaxed stream-capture mode, then restore"

  CUmemAllocationProp allocation_prop(bool exportable) const noexcept;
  // Counts a handle made by create() or import_handle() (the driver may hand
  // out the same value twice for one allocation imported twice).
  void track_handle(CUmemGenericAllocationHandle handle, std::size_t bytes);

  const cuda::Driver& driver_;
  const int ordinal_;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  std::size_t granularity_ = 0;
  std::atomic<bool> exportable_{true};
  std::vector<CUdevice> peers_;  // CUdevice of every ordinal, this one included

  // Live handles (with their sizes and references) and reservations, for
  // live_objects().
  struct TrackedHandle {
    std::size_t bytes = 0;
    std::size_t references = 0;
  };
  mutable std::mutex objects_mutex_;
  std::unordered_map<std::uint64_t, TrackedHandle> handles_;
  LiveObjects live_;

  static constexpr std::size_t kMaxCachedEvents = 64;
  std::mutex events_mutex_;
  std::vector<CUevent> free_events_;  // reserved to kMaxCachedEvents
};

}  // namespace vmm
