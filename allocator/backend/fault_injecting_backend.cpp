// FaultInjectingBackend: forwards to an inner backend, failing the armed
// n-th call of a kind (see the header). No locks: per-kind atomic counters;
// the fetch_add on a kind's counter gives each call a unique number, and the
// compare-exchange on fail_at lets exactly one call fire an armed fault.
#include "allocator/backend/fault_injecting_backend.hpp"

#include <string>

#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {

constexpr int kInjectedErrorCode = 999;  // CUDA_ERROR_UNKNOWN
constexpr int kInjectedOomCode = 2;      // CUDA_ERROR_OUT_OF_MEMORY

// The driver function behind each kind, so injected errors read like real ones.
const char* driver_function(BackendCall kind) noexcept {
  switch (kind) {
    case BackendCall::reserve:
      return "cuMemAddressReserve";
    case BackendCall::free_va:
      return "cuMemAddressFree";
    case BackendCall::create:
      return "cuMemCreate";
    case BackendCall::release:
      return "cuMemRelease";
    case BackendCall::map:
      return "cuMemMap";
    case BackendCall::unmap:
      return "cuMemUnmap";
    case BackendCall::set_access:
      return "cuMemSetAccess";
    case BackendCall::record_fence:
      return "cuEventRecord";
    case BackendCall::query_fence:
      return "cuEventQuery";
    case BackendCall::wait_fence:
      return "cuEventSynchronize";
    case BackendCall::can_access_peer:
      return "cuDeviceCanAccessPeer";
    case BackendCall::export_handle:
      return "cuMemExportToShareableHandle";
    case BackendCall::import_handle:
      return "cuMemImportFromShareableHandle";
    case BackendCall::alloc_pinned:
      return "cuMemHostAlloc";
    case BackendCall::create_stream:
      return "cuStreamCreate";
    case BackendCall::copy:
      return "cuMemcpyAsync";
    case BackendCall::count_:
      break;
  }
  return "unknown";
}

bool valid_kind(BackendCall kind) {
  const int i = static_cast<int>(kind);
  return i >= 0 && i < kBackendCallKinds;
}

}  // namespace

FaultInjectingBackend::FaultInjectingBackend(Backend& inner) : ForwardingBackend(inner) {}

// The base binds to *inner before owned_ takes the pointer over (bases are
// initialised first); the object itself stays where it is.
FaultInjectingBackend::FaultInjectingBackend(std::unique_ptr<Backend> inner)
    : ForwardingBackend(
          inner ? *inner : throw InvalidArgumentError("FaultInjectingBackend: null inner backend")),
      owned_(std::move(inner)) {}

FaultInjectingBackend::~FaultInjectingBackend() = default;

void FaultInjectingBackend::arm(BackendCall kind, std::uint64_t n, bool as_oom) {
  if (!valid_kind(kind)) throw InvalidArgumentError("FaultInjectingBackend: bad call kind");
  if (n == 0) throw InvalidArgumentError("FaultInjectingBackend: n counts from 1");
  Slot& slot = slots_[static_cast<std::size_t>(kind)];
  slot.as_oom.store(as_oom, std::memory_order_relaxed);
  fired_.store(false, std::memory_order_release);
  // Release: a call that sees this fail_at also sees as_oom.
  slot.fail_at.store(slot.calls.load(std::memory_order_relaxed) + n, std::memory_order_release);
}

void FaultInjectingBackend::fail_nth(BackendCall kind, std::uint64_t n) { arm(kind, n, false); }

void FaultInjectingBackend::fail_nth_as_oom(BackendCall kind, std::uint64_t n) {
  arm(kind, n, true);
}

void FaultInjectingBackend::disarm() noexcept {
  for (Slot& slot : slots_) slot.fail_at.store(0, std::memory_order_release);
  fired_.store(false, std::memory_order_release);
}

std::uint64_t FaultInjectingBackend::calls(BackendCall kind) const noexcept {
  if (!valid_kind(kind)) return 0;
  return slots_[static_cast<std::size_t>(kind)].calls.load(std::memory_order_relaxed);
}

void FaultInjectingBackend::enter(BackendCall kind) {
  Slot& slot = slots_[static_cast<std::size_t>(kind)];
  const std::uint64_t n = slot.calls.fetch_add(1, std::memory_order_relaxed) + 1;
  std::uint64_t target = slot.fail_at.load(std::memory_order_acquire);
  if (target != n || !slot.fail_at.compare_exchange_strong(target, 0, std::memory_order_acq_rel)) {
    return;
  }
  fired_.store(true, std::memory_order_release);
  const std::string call = std::string(driver_function(kind)) + " (injected)";
  const std::string what = call + ": fault injected at call " + std::to_string(n) + " of " +
                           backend_call_name(kind) + " by FaultInjectingBackend";
  if (slot.as_oom.load(std::memory_order_relaxed)) {
    throw DeviceOutOfMemoryError(call, kInjectedOomCode, what + " (out of memory)");
  }
  throw DriverError(call, kInjectedErrorCode, what);
}

std::uintptr_t FaultInjectingBackend::reserve(std::size_t bytes, std::size_t alignment) {
  enter(BackendCall::reserve);
  return ForwardingBackend::reserve(bytes, alignment);
}

void FaultInjectingBackend::free_va(std::uintptr_t base, std::size_t bytes) {
  enter(BackendCall::free_va);
  ForwardingBackend::free_va(base, bytes);
}

PhysicalHandle FaultInjectingBackend::create(std::size_t bytes) {
  enter(BackendCall::create);
  return ForwardingBackend::create(bytes);
}

void FaultInjectingBackend::release(PhysicalHandle handle) {
  enter(BackendCall::release);
  ForwardingBackend::release(handle);
}

void FaultInjectingBackend::map(std::uintptr_t va, std::size_t bytes, PhysicalHandle handle) {
  enter(BackendCall::map);
  ForwardingBackend::map(va, bytes, handle);
}

void FaultInjectingBackend::unmap(std::uintptr_t va, std::size_t bytes) {
  enter(BackendCall::unmap);
  ForwardingBackend::unmap(va, bytes);
}

void FaultInjectingBackend::set_access(std::uintptr_t va, std::size_t bytes) {
  enter(BackendCall::set_access);
  ForwardingBackend::set_access(va, bytes);
}

void FaultInjectingBackend::set_access(std::uintptr_t va, std::size_t bytes,
                                       std::span<const int> devices) {
  enter(BackendCall::set_access);
  ForwardingBackend::set_access(va, bytes, devices);
}

bool FaultInjectingBackend::can_access_peer(int peer) {
  enter(BackendCall::can_access_peer);
  return ForwardingBackend::can_access_peer(peer);
}

int FaultInjectingBackend::export_handle(PhysicalHandle handle) {
  enter(BackendCall::export_handle);
  return ForwardingBackend::export_handle(handle);
}

PhysicalHandle FaultInjectingBackend::import_handle(int fd, std::size_t bytes) {
  enter(BackendCall::import_handle);
  return ForwardingBackend::import_handle(fd, bytes);
}

FenceHandle FaultInjectingBackend::record_fence(Stream stream) {
  enter(BackendCall::record_fence);
  return ForwardingBackend::record_fence(stream);
}

bool FaultInjectingBackend::fence_completed(FenceHandle fence) {
  enter(BackendCall::query_fence);
  return ForwardingBackend::fence_completed(fence);
}

void FaultInjectingBackend::wait_fence(FenceHandle fence) {
  enter(BackendCall::wait_fence);
  ForwardingBackend::wait_fence(fence);
}

void* FaultInjectingBackend::alloc_pinned(std::size_t bytes) {
  enter(BackendCall::alloc_pinned);
  return ForwardingBackend::alloc_pinned(bytes);
}

Stream FaultInjectingBackend::create_copy_stream() {
  enter(BackendCall::create_stream);
  return ForwardingBackend::create_copy_stream();
}

void FaultInjectingBackend::copy(void* dst, const void* src, std::size_t bytes, Stream stream) {
  enter(BackendCall::copy);
  ForwardingBackend::copy(dst, src, bytes, stream);
}

}  // namespace vmm
