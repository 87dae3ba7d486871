// FaultInjectingBackend: wraps another backend and fails the Nth call of a
// chosen kind, for tests that every failure leaves the allocator consistent
// (no leaked handle, no half-mapped range, exact accounting).
//
// Everything is forwarded to the inner backend. An armed fault fires once: the
// n-th call of its kind (1-based, counted from arming) throws instead of
// calling the inner backend, so the inner backend sees no trace of it; later
// calls go through again. Each kind can be armed independently. A typical
// test loops n = 1, 2, ... arming the fault, running an operation and checking
// the invariants, until fired() stays false (the operation made fewer calls).
//
// Injected errors, shaped like the driver's:
//   fail_nth        DriverError, call() "<driver function> (injected)" (for
//                   map: "cuMemMap (injected)"), code() 999 (CUDA_ERROR_UNKNOWN)
//   fail_nth_as_oom DeviceOutOfMemoryError, code() 2 (CUDA_ERROR_OUT_OF_MEMORY)
//
// destroy_fence() (noexcept), memory_info(), device_count() and
// prepare_background_thread() have no BackendCall kind: they are forwarded,
// never injected, not counted. Both set_access overloads count as set_access.
//
// Thread-safety: as thread-safe as the inner backend. Counters and armed
// faults are atomics: a fault armed while calls of its kind are in flight on
// other threads counts from some point during the arming; exactly one call
// fires it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>

#include "allocator/backend/forwarding_backend.hpp"

namespace vmm {

class FaultInjectingBackend final : public ForwardingBackend {
 public:
  // Wraps `inner`, which must outlive this object.
  explicit FaultInjectingBackend(Backend& inner);
  // Wraps and owns `inner`. Throws InvalidArgumentError if it is null.
  explicit FaultInjectingBackend(std::unique_ptr<Backend> inner);
  ~FaultInjectingBackend() override;
  FaultInjectingBackend(const FaultInjectingBackend&) = delete;
  FaultInjectingBackend& operator=(const FaultInjectingBackend&) = delete;

  // Arms a fault: the n-th call of `kind` from now (n >= 1) throws DriverError
  // and is not forwarded. Replaces a fault armed earlier for `kind`, and
  // resets fired(). Throws InvalidArgumentError for n == 0 or a bad kind.
  void fail_nth(BackendCall kind, std::uint64_t n);
  // The same, throwing DeviceOutOfMemoryError (meant for create; the driver
  // can also report out of memory from reserve and map).
  void fail_nth_as_oom(BackendCall kind, std::uint64_t n);
  // Disarms every fault and resets fired().
  void disarm() noexcept;
  // True once an armed fault has fired since the last fail_nth*/disarm.
  bool fired() const noexcept { return fired_.load(std::memory_order_acquire); }
  // Calls of `kind` seen by this wrapper since construction, injected ones
  // included (the inner backend's own counts exclude them).
  std::uint64_t calls(BackendCall kind) const noexcept;

  // --- Backend: the calls that have a BackendCall kind --------------------
  // The rest (name, device, device_count, granularity, memory_info,
  // live_objects, destroy_fence, prepare_background_thread,
  // stream_capturing, free_pinned, destroy_copy_stream) are
  // ForwardingBackend's: forwarded, never counted.
  std::uintptr_t reserve(std::size_t bytes, std::size_t alignment) override;
  void free_va(std::uintptr_t base, std::size_t bytes) override;
  PhysicalHandle create(std::size_t bytes) override;
  void release(PhysicalHandle handle) override;
  void map(std::uintptr_t va, std::size_t bytes, PhysicalHandle handle) override;
  void unmap(std::uintptr_t va, std::size_t bytes) override;
  void set_access(std::uintptr_t va, std::size_t bytes) override;
  void set_access(std::uintptr_t va, std::size_t bytes, std::span<const int> devices) override;
  bool can_access_peer(int peer) override;
  int export_handle(PhysicalHandle handle) override;
  PhysicalHandle import_handle(int fd, std::size_t bytes) override;
  FenceHandle record_fence(Stream stream) override;
  bool fence_completed(FenceHandle fence) override;
  void wait_fence(FenceHandle fence) override;
  void* alloc_pinned(std::size_t bytes) override;
  Stream create_copy_stream() override;
  void copy(void* dst, const void* src, std::size_t bytes, Stream stream) override;

 private:
  struct Slot {
    std::atomic<std::uint64_t> calls{0};
    std::atomic<std::uint64_t> fail_at{0};  // value of `calls` that fails; 0: disarmed
    std::atomic<bool> as_oom{false};
  };

  void arm(BackendCall kind, std::uint64_t n, bool as_oom);
  // Counts a call of `kind`; throws if it is the armed one.
  void enter(BackendCall kind);

  std::unique_ptr<Backend> owned_;  // the inner backend, where this owns it
  std::array<Slot, kBackendCallKinds> slots_;
  std::atomic<bool> fired_{false};
};

}  // namespace vmm
