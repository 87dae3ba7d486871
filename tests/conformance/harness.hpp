// Shared set-up for the backend-generic suites: a test device (streams and
// queued work), the backend under test wrapped in a FaultInjectingBackend,
// and a DeviceContext over it. The fixture types select the backend:
// HostFixture in vmm_host_tests, CudaFixture in vmm_gpu_tests; VMM_FIXTURES
// names the one of this build, for TEMPLATE_TEST_CASE.
#pragma once

#include <chrono>
#include <memory>
#include <thread>

#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/backend/host_backend.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_device.hpp"
#include "vmmalloc/allocator.hpp"

namespace vmm::test {

struct HostFixture {
  static std::unique_ptr<TestDevice> make() { return make_host_test_device(); }
};
#ifdef VMM_TEST_HAVE_CUDA
struct CudaFixture {
  static std::unique_ptr<TestDevice> make() { return make_cuda_test_device(); }
};
#endif

}  // namespace vmm::test

// The fixture a conformance suite is instantiated with in this binary
// (VMM_CONFORMANCE_CUDA in vmm_gpu_tests, else the host backend). A suite
// that still defines it itself, with these same tokens, is a harmless
// identical redefinition.
#if defined(VMM_CONFORMANCE_CUDA)
#define VMM_FIXTURES vmm::test::CudaFixture
#else
#define VMM_FIXTURES vmm::test::HostFixture
#endif

namespace vmm::test {

// Small reservations keep sanitizer builds happy; a modest cache limit keeps
// shrink tests meaningful.
inline Config test_config() {
  Config c;
  c.va_reservation_size = 8 * GiB;
  c.pool_cache_limit = 64 * MiB;
  return c;
}

class Harness {
 public:
  explicit Harness(std::unique_ptr<TestDevice> device, Config config = test_config())
      : device_(std::move(device)), inner_(device_->make_backend()) {
    auto faulty = std::make_unique<FaultInjectingBackend>(*inner_);
    faults_ = faulty.get();
    context_ = std::make_unique<DeviceContext>(std::move(faulty), config);
    stream_ = device_->create_stream();
  }
  ~Harness() {
    device_->synchronize(stream_);
    context_.reset();
    device_->destroy_stream(stream_);
  }
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  TestDevice& device() { return *device_; }
  DeviceContext& context() { return *context_; }
  FaultInjectingBackend& faults() { return *faults_; }
  Backend& inner() { return *inner_; }
  Stream stream() const { return stream_; }

  // Destroys the context and reports whether anything leaked on the backend.
  // The backend's own count of handles, reservations and mappings is the
  // judge (a device-wide free-memory reading moves with streams and events).
  bool destroy_context_and_check_no_leak() {
    device_->synchronize(stream_);
    context_.reset();
    const LiveObjects live = inner_->live_objects();
    INFO("live after teardown: " << live.handles << " handles (" << live.handle_bytes
                                 << " bytes), " << live.reservations << " reservations, "
                                 << live.mapped_bytes << " bytes mapped");
    CHECK(live == LiveObjects{});
    return live == LiveObjects{};
  }

  // True if work queued on `stream` so far is still running (a fence of the
  // inner backend, queried once; the allocator's counters see nothing).
  // Tests that need a stream to stay busy for a while check it: tools that
  // serialize kernels (compute-sanitizer) finish earlier work first.
  bool still_busy(Stream stream) {
    const FenceHandle fence = mark(stream);
    const bool busy = running(fence);
    unmark(fence);
    return busy;
  }

  // A mark after the work queued on `stream` so far: running(mark) asks
  // about that work alone, so a test that queues a long spell and then more
  // work on the same stream can tell how long the spell lasted (still_busy
  // would also count the later work, which under compute-sanitizer is slow
  // enough to look busy when the spell is long over). unmark frees it.
  FenceHandle mark(Stream stream) { return inner_->record_fence(stream); }
  bool running(FenceHandle mark) { return !inner_->fence_completed(mark); }
  void unmark(FenceHandle mark) { inner_->destroy_fence(mark); }

  // Polls the reclaimer until nothing is pending (the work before the fences
  // must be finished or finishing). False after `timeout`.
  bool wait_reclaimed(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (context_->reclaimer().stats().pending_entries != 0) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      context_->reclaimer().poll();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

 private:
  std::unique_ptr<TestDevice> device_;
  std::unique_ptr<Backend> inner_;
  FaultInjectingBackend* faults_ = nullptr;
  std::unique_ptr<DeviceContext> context_;
  Stream stream_ = nullptr;
};

// Accounting that must hold whenever no operation is in flight.
inline void check_accounting(DeviceContext& ctx, std::size_t mapped_by_regions) {
  const Reclaimer::Accounting a = ctx.reclaimer().accounting();
  const PoolStats& p = a.pool;
  const ReclaimerStats& r = a.reclaimer;
  CHECK(p.created_bytes == p.acquired_bytes + p.cached_bytes);
  CHECK(p.acquired_bytes == mapped_by_regions + r.pending_bytes);
}

// The same for an allocator's heap at rest: every acquired chunk is mapped by
// the heap or pending reclaim.
inline void check_heap_accounting(Harness& h, const Allocator& a) {
  check_accounting(h.context(), a.stats().mapped_bytes);
}

}  // namespace vmm::test
