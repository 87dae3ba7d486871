// GPU misuse cases of docs/reliability.md: a CUDA-graph capture that fails
// midway (the user's capture is invalidated after the allocator handed out
// and took back memory inside it). The allocator must come out of it
// consistent: the blocks allocated inside the failed capture can be freed,
// the graph pool released, the stream serves ordinary allocations again
// (fences are recorded on it once the capture is over), and nothing leaks.
// Another thread allocating on another stream meanwhile is not disturbed.
#include <cstdint>
#include <exception>
#include <string>
#include <thread>

#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/conformance/harness.hpp"
#include "tests/gpu/capture_helpers.hpp"
#include "tests/gpu/gpu_kernels.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"

namespace {

using vmm::MiB;

}  // namespace

TEST_CASE("misuse: a CUDA-graph capture that fails midway leaves the allocator consistent",
          "[gpu][allocator][graph][misuse]") {
  vmm::test::Harness h(vmm::test::make_cuda_test_device());
  {
    vmm::Allocator a(h.context());
    vmm::Stream S = h.stream();
    vmm::Stream T = h.device().create_stream();
    // General memory freed on S before the capture, with work behind it.
    void* before = a.allocate(8 * MiB, S);
    h.device().fill(S, before, 8 * MiB, 1);
    a.deallocate(before);
    h.device().synchronize(S);

    const vmm::PoolId pool = a.create_pool();
    vmm::test::begin_capture(S);
    a.begin_pool(pool, S);
    void* x = a.allocate(8 * MiB, S);
    void* y = a.allocate(100000, S);
    vmm::test::launch_scribble(S, x, 8 * MiB, 0x5A, 0, 32);  // captured, never run
    a.deallocate(y);                                         // a free inside the capture
    void* z = a.allocate(24 * MiB, S);                       // grows the pool mid-capture
    // Meanwhile another thread allocates and frees on T (relaxed capture
    // mode: its fence calls must not break anything either).
    std::exception_ptr other_error;
    std::thread other([&] {
      try {
        for (int i = 0; i < 8; ++i) {
          void* p = a.allocate((i + 1) * MiB, T);
          h.device().fill(T, p, (i + 1) * MiB, 0x3C);
          a.deallocate(p);
        }
      } catch (...) {
        other_error = std::current_exception();
      }
    });
    other.join();
    if (other_error) std::rethrow_exception(other_error);

    // The user's mistake: synchronizing the capturing stream. The runtime
    // refuses it and the capture is invalidated.
    const std::string refused = vmm::test::break_capture(S);
    INFO("synchronize during the capture: " << refused);
    a.end_pool(pool);
    CHECK_THROWS_AS(vmm::test::end_capture(S), std::runtime_error);  // invalidated
    CHECK_FALSE(vmm::test::capture_in_progress(S));

    // The memory of the failed capture is freed and the pool released.
    a.deallocate(x);
    a.deallocate(z);
    a.release_pool(pool);
    CHECK(a.stats().active_blocks == 0);

    // S serves again; its fences work (memory moves to T once S is done).
    for (int round = 0; round < 3; ++round) {
      void* p = a.allocate(16 * MiB, S);
      h.device().fill(S, p, 16 * MiB, static_cast<std::uint8_t>(0x40 + round));
      h.device().verify(S, p, 16 * MiB, static_cast<std::uint8_t>(0x40 + round));
      a.deallocate(p);
      void* q = a.allocate(16 * MiB, T);
      h.device().fill(T, q, 16 * MiB, 0x50);
      h.device().verify(T, q, 16 * MiB, 0x50);
      a.deallocate(q);
    }
    CHECK(h.device().mismatches(S) == 0);
    CHECK(h.device().mismatches(T) == 0);
    a.empty_cache();
    REQUIRE(h.wait_reclaimed());
    vmm::test::check_accounting(h.context(), a.stats().mapped_bytes);
    h.device().synchronize(T);
    a.release_stream(T);
    h.device().destroy_stream(T);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}
