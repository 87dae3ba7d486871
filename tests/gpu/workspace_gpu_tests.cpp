// GPU-only tests: real kernels touch a vmm::Workspace while other threads
// grow and shrink it. They check what only a GPU can show: mapping new
// memory never disturbs a kernel already running over the old part, no call
// waits for queued kernels, and a shrink's tail stays mapped until the work
// queued before the shrink has finished (else the kernel would fault with an
// illegal address). Each case runs in well under 5 s.
//
// Timing claims are checked without races: "returned before the kernel
// ended" is stream_busy() still being true after the call returned. Under
// compute-sanitizer every driver call and kernel is slower, so
// scripts/gpu_suite.sh sets VMM_TEST_TIME_SCALE (an integer, default 1) to
// stretch the kernels and the time limits alike.
// Catch2 assertions are made on the test's own thread only.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "allocator/backend/cuda_backend.hpp"
#include "allocator/backend/cuda_driver.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "tests/common/test_device.hpp"
#include "tests/gpu/gpu_kernels.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/workspace.hpp"

namespace {

using vmm::GiB;
using vmm::MiB;
using vmm::test::time_scale;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

unsigned char* bytes_at(const vmm::Workspace& ws, std::size_t offset = 0) {
  return static_cast<unsigned char*>(ws.data()) + offset;
}

// A grow far slower than this would mean it waited for the queued kernel.
const double kGrowLimitMs = 100.0 * time_scale();
// The kernel that runs during the grows: long enough that a grow which
// waited for it could not go unnoticed.
const unsigned kKernelMs = 500 * time_scale();
// How long the stream is blocked before a kernel reads a shrunk tail.
const unsigned kBlockMs = 300 * time_scale();

// Loads every kernel the test uses (lazy module loading, compute-sanitizer
// instrumentation) before anything is timed.
void warm_up(vmm::test::TestDevice& dev, vmm::Stream stream, void* ptr) {
  dev.fill(stream, ptr, 64, 0);
  dev.verify(stream, ptr, 64, 0);
  vmm::test::launch_scribble(stream, ptr, 64, 0, 0, 1);
  dev.block(stream, 0);
  REQUIRE(dev.mismatches(stream) == 0);
}

struct GrowLog {
  std::vector<double> ms;
  std::vector<void*> bases;
  std::exception_ptr error;
};

// Grows `ws` through `sizes` on a thread of its own, as a caller would while
// another thread queues kernels.
std::thread grow_on_thread(vmm::Workspace& ws, std::vector<std::size_t> sizes, GrowLog& log) {
  return std::thread([&ws, &log, sizes = std::move(sizes)] {
    try {
      for (std::size_t size : sizes) {
        const auto start = Clock::now();
        ws.grow_to(size);
        log.ms.push_back(ms_since(start));
        log.bases.push_back(ws.data());
      }
    } catch (...) {
      log.error = std::current_exception();
    }
  });
}

void check_grows(const GrowLog& log, std::size_t count, void* base) {
  if (log.error) std::rethrow_exception(log.error);
  REQUIRE(log.ms.size() == count);
  for (std::size_t i = 0; i < count; ++i) {
    INFO("grow " << i << " took " << log.ms[i] << " ms");
    CHECK(log.ms[i] < kGrowLimitMs);
    CHECK(log.bases[i] == base);
  }
}

}  // namespace

TEST_CASE("the CUDA backend maps memory kernels can use", "[gpu][backend]") {
  auto dev = vmm::test::make_cuda_test_device();
  vmm::CudaBackend backend(0);
  REQUIRE(std::string(backend.name()) == "cuda");
  const std::size_t g = backend.granularity();
  REQUIRE(vmm::is_power_of_two(g));
  const vmm::DeviceMemoryInfo info = backend.memory_info();
  CHECK(info.total_bytes > 0);
  CHECK(info.free_bytes <= info.total_bytes);

  const std::size_t bytes = 4 * g;
  const std::uintptr_t va = backend.reserve(bytes, g);
  const vmm::PhysicalHandle handle = backend.create(bytes);
  backend.map(va, bytes, handle);
  backend.set_access(va, bytes);
  const vmm::LiveObjects live = backend.live_objects();
  CHECK(live.handles == 1);
  CHECK(live.handle_bytes == bytes);
  CHECK(live.reservations == 1);
  CHECK(live.reserved_bytes == bytes);
  CHECK(live.mapped_bytes == bytes);

  vmm::Stream s = dev->create_stream();
  dev->fill(s, reinterpret_cast<void*>(va), bytes, 0x5A);
  dev->verify(s, reinterpret_cast<void*>(va), bytes, 0x5A);
  // A fence after the work: completes, and a recycled event works again.
  vmm::FenceHandle fence = backend.record_fence(s);
  backend.wait_fence(fence);
  CHECK(backend.fence_completed(fence));
  backend.destroy_fence(fence);
  dev->block(s, 100);
  fence = backend.record_fence(s);
  CHECK_FALSE(backend.fence_completed(fence));
  backend.wait_fence(fence);
  CHECK(backend.fence_completed(fence));
  backend.destroy_fence(fence);
  CHECK(dev->mismatches(s) == 0);

  backend.unmap(va, bytes);
  backend.release(handle);
  backend.free_va(va, bytes);
  CHECK(backend.live_objects() == vmm::LiveObjects{});
  dev->destroy_stream(s);
}

TEST_CASE("the CUDA backend restores the caller's context and names failed calls",
          "[gpu][backend]") {
  vmm::CudaBackend backend(0);
  const vmm::cuda::Driver& d = vmm::cuda::driver();

  // A thread with no current context keeps none after a backend call.
  bool unbound_before = false;
  bool unbound_after = false;
  std::exception_ptr error;
  std::thread([&] {
    try {
      CUcontext ctx = nullptr;
      vmm::cuda::check(d.CtxGetCurrent(&ctx), "cuCtxGetCurrent");
      unbound_before = ctx == nullptr;
      (void)backend.memory_info();
      vmm::cuda::check(d.CtxGetCurrent(&ctx), "cuCtxGetCurrent");
      unbound_after = ctx == nullptr;
    } catch (...) {
      error = std::current_exception();
    }
  }).join();
  if (error) std::rethrow_exception(error);
  CHECK(unbound_before);
  CHECK(unbound_after);

  // A size that is not a multiple of the granularity: the driver refuses it,
  // and the error names the call and the CUresult.
  try {
    (void)backend.reserve(backend.granularity() / 2, 0);
    FAIL("cuMemAddressReserve accepted a misaligned size");
  } catch (const vmm::DriverError& e) {
    INFO(e.what());
    CHECK(e.call() == "cuMemAddressReserve");
    CHECK(e.code() == CUDA_ERROR_INVALID_VALUE);
    CHECK(std::string(e.what()).find("cuMemAddressReserve failed: CUDA_ERROR_INVALID_VALUE (1)") ==
          0);
  }
}

TEST_CASE("a kernel keeps writing a workspace while another thread grows it", "[gpu][workspace]") {
  auto dev = vmm::test::make_cuda_test_device();
  vmm::DeviceContext ctx(std::make_unique<vmm::CudaBackend>(0), vmm::Config{});
  vmm::Workspace ws(ctx, 1 * GiB);
  vmm::Stream s = dev->create_stream();

  const std::size_t initial = 32 * MiB;
  const std::size_t final_size = 512 * MiB;
  ws.grow_to(initial);
  void* const base = ws.data();
  warm_up(*dev, s, base);

  // Old contents: the first half is rewritten by the running kernel, the
  // second half must survive every grow untouched.
  dev->fill(s, base, initial, 0xA1);
  vmm::test::launch_scribble(s, base, initial / 2, 0xB2, kKernelMs, 16);
  GrowLog log;
  grow_on_thread(ws, {64 * MiB, 128 * MiB, 256 * MiB, final_size}, log).join();
  const bool busy_after_grows = vmm::test::stream_busy(s);

  dev->fill(s, bytes_at(ws, initial), final_size - initial, 0xC3);
  dev->verify(s, base, initial / 2, 0xB2);
  dev->verify(s, bytes_at(ws, initial / 2), initial / 2, 0xA1);
  dev->verify(s, bytes_at(ws, initial), final_size - initial, 0xC3);
  REQUIRE_NOTHROW(dev->synchronize(s));
  CHECK(dev->mismatches(s) == 0);

  check_grows(log, 4, base);
  CHECK(busy_after_grows);  // every grow returned while the kernel still ran
  CHECK(ws.data() == base);
  CHECK(ws.size() == final_size);
  CHECK(ws.mapped_bytes() == final_size);
  dev->destroy_stream(s);
}

TEST_CASE("a shrink while a kernel still reads the tail returns at once and faults nothing",
          "[gpu][workspace]") {
  auto dev = vmm::test::make_cuda_test_device();
  vmm::DeviceContext ctx(std::make_unique<vmm::CudaBackend>(0), vmm::Config{});
  vmm::Workspace ws(ctx, 1 * GiB);
  vmm::Stream s = dev->create_stream();

  // Two grows, so the tail past 16 MiB is chunks of its own that a shrink to
  // 16 MiB can detach.
  const std::size_t small = 16 * MiB;
  const std::size_t large = 256 * MiB;
  ws.grow_to(small);
  ws.grow_to(large);
  void* const base = ws.data();
  warm_up(*dev, s, base);
  dev->fill(s, base, large, 0x3C);
  dev->synchronize(s);
  const std::size_t acquired_before = ctx.pool().stats().acquired_bytes;
  CHECK(acquired_before == large);

  // The verify reads the whole old size, tail included, only after the
  // blocking kernel: long after the shrink below has returned.
  dev->block(s, kBlockMs);
  dev->verify(s, base, large, 0x3C);
  const auto start = Clock::now();
  ws.shrink_to(small, s);
  const double shrink_ms = ms_since(start);
  const std::size_t acquired_at_shrink = ctx.pool().stats().acquired_bytes;
  // Read after the stats: if the stream is still busy now, the shrink's
  // fence cannot have completed when the stats were taken.
  const bool busy_after_shrink = vmm::test::stream_busy(s);

  REQUIRE_NOTHROW(dev->synchronize(s));  // no illegal address
  CHECK(dev->mismatches(s) == 0);
  INFO("shrink took " << shrink_ms << " ms");
  CHECK(shrink_ms < kGrowLimitMs);
  REQUIRE(busy_after_shrink);
  CHECK(acquired_at_shrink == acquired_before);  // the tail is not back before its fence
  CHECK(ws.size() == small);

  // The reclaimer returns the tail once the fence has completed.
  const auto deadline = Clock::now() + std::chrono::seconds(1);
  while (ctx.pool().stats().acquired_bytes > small && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(ctx.pool().stats().acquired_bytes == small);
  CHECK(ctx.reclaimer().stats().pending_bytes == 0);
  CHECK(ws.mapped_bytes() == small);
  CHECK(ws.data() == base);

  // What is left is still usable.
  dev->fill(s, base, small, 0x7E);
  dev->verify(s, base, small, 0x7E);
  CHECK(dev->mismatches(s) == 0);
  dev->destroy_stream(s);
}

TEST_CASE("kernels on two streams write two workspaces while both grow", "[gpu][workspace]") {
  auto dev = vmm::test::make_cuda_test_device();
  vmm::DeviceContext ctx(std::make_unique<vmm::CudaBackend>(0), vmm::Config{});
  vmm::Workspace a(ctx, 1 * GiB);
  vmm::Workspace b(ctx, 1 * GiB);
  vmm::Stream sa = dev->create_stream();
  vmm::Stream sb = dev->create_stream();

  const std::size_t initial = 16 * MiB;
  const std::size_t final_size = 256 * MiB;
  a.grow_to(initial);
  b.grow_to(initial);
  void* const base_a = a.data();
  void* const base_b = b.data();
  warm_up(*dev, sa, base_a);
  warm_up(*dev, sb, base_b);

  // Few blocks each, so both kernels are resident at once.
  dev->fill(sa, base_a, initial, 0x11);
  dev->fill(sb, base_b, initial, 0x22);
  vmm::test::launch_scribble(sa, base_a, initial / 2, 0x33, kKernelMs, 8);
  vmm::test::launch_scribble(sb, base_b, initial / 2, 0x44, kKernelMs, 8);
  GrowLog log_a;
  GrowLog log_b;
  std::thread grow_a = grow_on_thread(a, {32 * MiB, 64 * MiB, 128 * MiB, final_size}, log_a);
  std::thread grow_b = grow_on_thread(b, {64 * MiB, 96 * MiB, 192 * MiB, final_size}, log_b);
  grow_a.join();
  grow_b.join();
  const bool busy_a = vmm::test::stream_busy(sa);
  const bool busy_b = vmm::test::stream_busy(sb);

  dev->fill(sa, bytes_at(a, initial), final_size - initial, 0x55);
  dev->fill(sb, bytes_at(b, initial), final_size - initial, 0x66);
  dev->verify(sa, base_a, initial / 2, 0x33);
  dev->verify(sb, base_b, initial / 2, 0x44);
  dev->verify(sa, bytes_at(a, initial / 2), initial / 2, 0x11);
  dev->verify(sb, bytes_at(b, initial / 2), initial / 2, 0x22);
  dev->verify(sa, bytes_at(a, initial), final_size - initial, 0x55);
  dev->verify(sb, bytes_at(b, initial), final_size - initial, 0x66);
  REQUIRE_NOTHROW(dev->synchronize(sa));
  REQUIRE_NOTHROW(dev->synchronize(sb));
  CHECK(dev->mismatches(sa) == 0);
  CHECK(dev->mismatches(sb) == 0);

  check_grows(log_a, 4, base_a);
  check_grows(log_b, 4, base_b);
  CHECK(busy_a);
  CHECK(busy_b);
  CHECK(a.mapped_bytes() == final_size);
  CHECK(b.mapped_bytes() == final_size);
  CHECK(ctx.pool().stats().acquired_bytes == 2 * final_size);
  dev->destroy_stream(sa);
  dev->destroy_stream(sb);
}
