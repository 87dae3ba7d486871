// CudaBackend (see cuda_backend.hpp): each Backend call is one driver call,
// made with this device's primary context current, its CUresult turned into
// a typed error naming the call.
//
// Thread-safety: driver calls need no lock; events_mutex_ guards only the
// event free list and is never held across a driver call.
#include "allocator/backend/cuda_backend.hpp"

#include <string>
#include <vector>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

using cuda::check;

// Makes the backend's context current on this thread for one call and puts
// the previous one (possibly none) back afterwards.
class CudaBackend::CurrentContext {
 public:
  explicit CurrentContext(const CudaBackend& backend) : driver_(backend.driver_) {
    CUcontext current = nullptr;
    check(driver_.CtxGetCurrent(&current), "cuCtxGetCurrent");
    if (current != backend.context_) {
      check(driver_.CtxSetCurrent(backend.context_), "cuCtxSetCurrent");
      previous_ = current;
      restore_ = true;
    }
  }
  ~CurrentContext() {
    // Cannot fail for a context that was current a moment ago unless the
    // driver is shutting down, when nothing can be done about it anyway.
    if (restore_) (void)driver_.CtxSetCurrent(previous_);
  }
  CurrentContext(const CurrentContext&) = delete;
  CurrentContext& operator=(const CurrentContext&) = delete;

 private:
  const cuda::Driver& driver_;
  CUcontext previous_ = nullptr;
  bool restore_ = false;
};

// Event create/record/query/synchronize and the VMM calls (reserve, create,
// map, set access, unmap, release) are "potentially unsafe" calls in CUDA's
// global capture mode: made from any thread while some thread captures in
// that mode, they invalidate the capture (PyTorch guards its cudaMalloc the
// same way). Fences are made and queried, and memory is mapped, from
// allocating threads too (not only the reclaimer), so every such call runs
// in relaxed mode and restores the thread's own mode afterwards - except on
// a thread prepare_background_thread() switched to relaxed mode for good
// (the reclaimer, which polls fences constantly): no exchange needed there.
namespace {
thread_local bool t_relaxed_for_good = false;
}  // namespace

class CudaBackend::RelaxedCapture {
 public:
  explicit RelaxedCapture(const CudaBackend& backend) : driver_(backend.driver_) {
    if (t_relaxed_for_good) return;
    changed_ = driver_.ThreadExchangeStreamCaptureMode(&mode_) == CUDA_SUCCESS;
  }
  ~RelaxedCapture() {
    if (changed_) (void)driver_.ThreadExchangeStreamCaptureMode(&mode_);
  }
  RelaxedCapture(const RelaxedCapture&) = delete;
  RelaxedCapture& operator=(const RelaxedCapture&) = delete;

 private:
  const cuda::Driver& driver_;
  CUstreamCaptureMode mode_ = CU_STREAM_CAPTURE_MODE_RELAXED;
  bool changed_ = false;
};

CudaBackend::CudaBackend(int ordinal) : driver_(cuda::driver()), ordinal_(ordinal) {
  if (ordinal < 0 || ordinal >= driver_.device_count) {
    throw InvalidArgumentError("CUDA device " + std::to_string(ordinal) +
                               " does not exist: the driver reports " +
                               std::to_string(driver_.device_count) + " device(s)");
  }
  check(driver_.DeviceGet(&device_, ordinal), "cuDeviceGet");
  peers_.resize(static_cast<std::size_t>(driver_.device_count));
  for (int i = 0; i < driver_.device_count; ++i) {
    check(driver_.DeviceGet(&peers_[static_cast<std::size_t>(i)], i), "cuDeviceGet");
  }

  int vmm_supported = 0;
  check(driver_.DeviceGetAttribute(
            &vmm_supported, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, device_),
        "cuDeviceGetAttribute");
  if (vmm_supported == 0) {
    throw NotSupportedError("CUDA device " + std::to_string(ordinal) +
                            " does not support virtual memory management (cuMemMap)");
  }
  int fd_supported = 0;
  check(
      driver_.DeviceGetAttribute(
          &fd_supported, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, device_),
      "cuDeviceGetAttribute");
  exportable_.store(fd_supported != 0, std::memory_order_relaxed);

  check(driver_.DevicePrimaryCtxRetain(&context_, device_), "cuDevicePrimaryCtxRetain");
  try {
    CurrentContext scope(*this);
    const CUmemAllocationProp prop = allocation_prop(exportable_handles());
    std::size_t granularity = 0;
    check(driver_.MemGetAllocationGranularity(&granularity, &prop,
                                              CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
          "cuMemGetAllocationGranularity");
    if (!is_power_of_two(granularity)) {
      throw NotSupportedError("CUDA device " + std::to_string(ordinal) +
                              " reports an allocation granularity of " +
                              std::to_string(granularity) + " bytes, not a power of two");
    }
    granularity_ = granularity;
    free_events_.reserve(kMaxCachedEvents);  // destroy_fence never allocates
  } catch (...) {
    (void)driver_.DevicePrimaryCtxRelease(device_);
    throw;
  }
  log(LogLevel::debug, "cuda backend: device %d, granularity %zu bytes, %s handles", ordinal_,
      granularity_, exportable_handles() ? "fd-exportable" : "non-exportable");
}

CudaBackend::~CudaBackend() {
  // At process exit the driver may already be torn down: every call then
  // returns CUDA_ERROR_DEINITIALIZED, and there is nothing left to free.
  for (CUevent event : free_events_) (void)driver_.EventDestroy(event);
  const CUresult rc = driver_.DevicePrimaryCtxRelease(device_);
  if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_DEINITIALIZED) {
    log(LogLevel::warn, "cuDevicePrimaryCtxRelease(device %d) failed: %s (%d)", ordinal_,
        cuda::error_name(rc), static_cast<int>(rc));
  }
}

CUmemAllocationProp CudaBackend::allocation_prop(bool exportable) const noexcept {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device_;
  prop.requestedHandleTypes =
      exportable ? CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR : CU_MEM_HANDLE_TYPE_NONE;
  return prop;
}

DeviceMemoryInfo CudaBackend::memory_info() {
  CurrentContext scope(*this);
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  check(driver_.MemGetInfo(&free_bytes, &total_bytes), "cuMemGetInfo");
  return {free_bytes, total_bytes};
}

LiveObjects CudaBackend::live_objects() const {
  std::lock_guard lock(objects_mutex_);
  return live_;
}

std::uintptr_t CudaBackend::reserve(std::size_t bytes, std::size_t alignment) {
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  CUdeviceptr base = 0;
  check(driver_.MemAddressReserve(&base, bytes, alignment, 0, 0), "cuMemAddressReserve");
  std::lock_guard lock(objects_mutex_);
  ++live_.reservations;
  live_.reserved_bytes += bytes;
  return static_cast<std::uintptr_t>(base);
}

void CudaBackend::free_va(std::uintptr_t base, std::size_t bytes) {
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  check(driver_.MemAddressFree(static_cast<CUdeviceptr>(base), bytes), "cuMemAddressFree");
  std::lock_guard lock(objects_mutex_);
  --live_.reservations;
  live_.reserved_bytes -= bytes;
}

PhysicalHandle CudaBackend::create(std::size_t bytes) {
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  CUmemGenericAllocationHandle handle = 0;
  const bool exportable = exportable_handles();
  CUmemAllocationProp prop = allocation_prop(exportable);
  CUresult rc = driver_.MemCreate(&handle, bytes, &prop, 0);
  if (exportable && (rc == CUDA_ERROR_NOT_SUPPORTED || rc == CUDA_ERROR_INVALID_VALUE)) {
    // Some set-ups (containers, virtualised GPUs) refuse the POSIX-fd handle
    // type although the attribute claims it. Handles without it still work
    // for everything but IPC; decide once, from the first success.
    prop = allocation_prop(false);
    const CUresult retry = driver_.MemCreate(&handle, bytes, &prop, 0);
    if (retry == CUDA_SUCCESS && exportable_.exchange(false, std::memory_order_relaxed)) {
      log(LogLevel::warn,
          "device %d: cuMemCreate refused POSIX-file-descriptor handles (%s); "
          "creating non-exportable handles from now on (no IPC export)",
          ordinal_, cuda::error_name(rc));
    }
    rc = retry;
  }
  check(rc, "cuMemCreate");
  track_handle(handle, bytes);
  return PhysicalHandle{static_cast<std::uint64_t>(handle)};
}

void CudaBackend::track_handle(CUmemGenericAllocationHandle handle, std::size_t bytes) {
  std::lock_guard lock(objects_mutex_);
  TrackedHandle& tracked = handles_[static_cast<std::uint64_t>(handle)];
  tracked.bytes = bytes;
  ++tracked.references;
  ++live_.handles;
  live_.handle_bytes += bytes;
}

void CudaBackend::release(PhysicalHandle handle) {
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  check(driver_.MemRelease(static_cast<CUmemGenericAllocationHandle>(handle.value)),
        "cuMemRelease");
  std::lock_guard lock(objects_mutex_);
  if (auto it = handles_.find(handle.value); it != handles_.end()) {
    --live_.handles;
    live_.handle_bytes -= it->second.bytes;
    if (--it->second.references == 0) handles_.erase(it);
  }
}

void CudaBackend::map(std::uintptr_t va, std::size_t bytes, PhysicalHandle handle) {
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  check(driver_.MemMap(static_cast<CUdeviceptr>(va), bytes, 0,
                       static_cast<CUmemGenericAllocationHandle>(handle.value), 0),
        "cuMemMap");
  std::lock_guard lock(objects_mutex_);
  live_.mapped_bytes += bytes;
}

void CudaBackend::unmap(std::uintptr_t va, std::size_t bytes) {
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  check(driver_.MemUnmap(static_cast<CUdeviceptr>(va), bytes), "cuMemUnmap");
  std::lock_guard lock(objects_mutex_);
  live_.mapped_bytes -= bytes;
}

void CudaBackend::set_access(std::uintptr_t va, std::size_t bytes) {
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = device_;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  check(driver_.MemSetAccess(static_cast<CUdeviceptr>(va), bytes, &access, 1), "cuMemSetAccess");
}

void CudaBackend::set_access(std::uintptr_t va, std::size_t bytes, std::span<const int> devices) {
  std::vector<CUmemAccessDesc> access(devices.size());
  for (std::size_t i = 0; i < devices.size(); ++i) {
    const int ordinal = devices[i];
    if (ordinal < 0 || ordinal >= device_count()) {
      throw DriverError("cuMemSetAccess", CUDA_ERROR_INVALID_DEVICE,
                        "cuMemSetAccess failed: device " + std::to_string(ordinal) +
                            " does not exist (valid: 0 to " + std::to_string(device_count() - 1) +
                            ")");
    }
    access[i].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access[i].location.id = peers_[static_cast<std::size_t>(ordinal)];
    access[i].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  }
  if (access.empty()) return;
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  check(driver_.MemSetAccess(static_cast<CUdeviceptr>(va), bytes, access.data(), access.size()),
        "cuMemSetAccess");
}

bool CudaBackend::can_access_peer(int peer) {
  if (peer < 0 || peer >= device_count()) {
    throw InvalidArgumentError("peer device " + std::to_string(peer) +
                               " does not exist: the driver reports " +
                               std::to_string(device_count()) + " device(s)");
  }
  if (peer == ordinal_) return true;
  int can = 0;
  // "Can contexts on `peer` access memory of this device?"
  check(driver_.DeviceCanAccessPeer(&can, peers_[static_cast<std::size_t>(peer)], device_),
        "cuDeviceCanAccessPeer");
  return can != 0;
}

int CudaBackend::export_handle(PhysicalHandle handle) {
  if (!exportable_handles()) {
    throw NotSupportedError("device " + std::to_string(ordinal_) +
                            ": physical handles are not exportable as POSIX file descriptors "
                            "here (cuMemCreate refused CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR), "
                            "so memory cannot be shared with another process");
  }
  CurrentContext scope(*this);
  int fd = -1;
  check(driver_.MemExportToShareableHandle(&fd,
                                           static_cast<CUmemGenericAllocationHandle>(handle.value),
                                           CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
        "cuMemExportToShareableHandle");
  return fd;
}

PhysicalHandle CudaBackend::import_handle(int fd, std::size_t bytes) {
  CurrentContext scope(*this);
  CUmemGenericAllocationHandle handle = 0;
  // The driver takes the descriptor's value as the "OS handle" pointer.
  void* os_handle = reinterpret_cast<void*>(static_cast<std::uintptr_t>(fd));
  check(driver_.MemImportFromShareableHandle(&handle, os_handle,
                                             CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
        "cuMemImportFromShareableHandle");
  track_handle(handle, bytes);
  return PhysicalHandle{static_cast<std::uint64_t>(handle)};
}

bool CudaBackend::stream_capturing(Stream stream) {
  CurrentContext scope(*this);
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  check(driver_.StreamIsCapturing(stream, &status), "cuStreamIsCapturing");
  return status != CU_STREAM_CAPTURE_STATUS_NONE;
}

bool CudaBackend::stream_exists(Stream stream) {
  CurrentContext scope(*this);
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  const CUresult rc = driver_.StreamIsCapturing(stream, &status);
  if (rc == CUDA_ERROR_INVALID_HANDLE) return false;
  check(rc, "cuStreamIsCapturing");
  return true;
}

void CudaBackend::synchronize_device() {
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  check(driver_.CtxSynchronize(), "cuCtxSynchronize");
}

FenceHandle CudaBackend::record_fence(Stream stream) {
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  CUevent event = nullptr;
  {
    std::lock_guard lock(events_mutex_);
    if (!free_events_.empty()) {
      event = free_events_.back();
      free_events_.pop_back();
    }
  }
  if (event == nullptr) {
    check(driver_.EventCreate(&event, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  }
  // vmm_stream_t and CUstream are the same type (struct CUstream_st*).
  const CUresult rc = driver_.EventRecord(event, stream);
  if (rc != CUDA_SUCCESS) {
    // Not recycled: after a failed record (e.g. an invalidated capture) the
    // event's state is not worth trusting.
    (void)driver_.EventDestroy(event);
    check(rc, "cuEventRecord");
  }
  return FenceHandle{event};
}

bool CudaBackend::fence_completed(FenceHandle fence) {
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  const CUresult rc = driver_.EventQuery(static_cast<CUevent>(fence.value));
  if (rc == CUDA_SUCCESS) return true;
  if (rc == CUDA_ERROR_NOT_READY) return false;
  check(rc, "cuEventQuery");
  return false;  // unreachable: check() threw
}

void CudaBackend::wait_fence(FenceHandle fence) {
  CurrentContext scope(*this);
  RelaxedCapture relaxed(*this);
  check(driver_.EventSynchronize(static_cast<CUevent>(fence.value)), "cuEventSynchronize");
}

void CudaBackend::destroy_fence(FenceHandle fence) noexcept {
  auto* event = static_cast<CUevent>(fence.value);
  if (event == nullptr) return;
  {
    // Re-recording an event that is still pending is allowed, so the event
    // can be reused at once. The vector was reserved: push_back cannot throw.
    std::lock_guard lock(events_mutex_);
    if (free_events_.size() < kMaxCachedEvents) {
      free_events_.push_back(event);
      return;
    }
  }
  (void)driver_.EventDestroy(event);
}

void CudaBackend::prepare_background_thread() {
  check(driver_.CtxSetCurrent(context_), "cuCtxSetCurrent");
  CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
  check(driver_.ThreadExchangeStreamCaptureMode(&mode), "cuThreadExchangeStreamCaptureMode");
  t_relaxed_for_good = true;
}

// Transfers: pinned memory, copy streams, copies. These make no VMM call
// and need no relaxed capture mode: sleep and wake refuse to run while a
// stream that used the memory is capturing, and copy streams are never
// captured.
void* CudaBackend::alloc_pinned(std::size_t bytes) {
  CurrentContext scope(*this);
  void* p = nullptr;
  check(driver_.MemHostAlloc(&p, bytes, CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc");
  std::lock_guard lock(objects_mutex_);
  live_.pinned_bytes += bytes;
  return p;
}

void CudaBackend::free_pinned(void* ptr, std::size_t bytes) noexcept {
  if (ptr == nullptr) return;
  const CUresult rc = driver_.MemFreeHost(ptr);
  if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_DEINITIALIZED) {
    log(LogLevel::warn, "cuda backend: cuMemFreeHost failed: %s", cuda::error_name(rc));
  }
  std::lock_guard lock(objects_mutex_);
  live_.pinned_bytes -= bytes;
}

Stream CudaBackend::create_copy_stream() {
  CurrentContext scope(*this);
  CUstream stream = nullptr;
  check(driver_.StreamCreate(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  return stream;
}

void CudaBackend::destroy_copy_stream(Stream stream) noexcept {
  const CUresult rc = driver_.StreamDestroy(stream);
  if (rc != CUDA_SUCCESS && rc != CUDA_ERROR_DEINITIALIZED) {
    log(LogLevel::warn, "cuda backend: cuStreamDestroy failed: %s", cuda::error_name(rc));
  }
}

void CudaBackend::copy(void* dst, const void* src, std::size_t bytes, Stream stream) {
  CurrentContext scope(*this);
  check(driver_.MemcpyAsync(reinterpret_cast<CUdeviceptr>(dst), reinterpret_cast<CUdeviceptr>(src),
                            bytes, stream),
        "cuMemcpyAsync");
}

}  // namespace vmm
