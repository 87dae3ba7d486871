// GPU memory-safety churn: workspaces grow and shrink, and blocks are freed,
// record_stream'd and handed to other streams, all while kernels still write
// them. Every resize and free returns at once (nothing waits for the
// kernels), yet no kernel may ever touch unmapped memory - a shrink's tail
// stays mapped until the work queued before it is done - and no block may
// reach another stream while a kernel still writes it. A fault shows as an
// error from the final synchronize (and as an illegal-address report under
// compute-sanitizer memcheck, which scripts/gpu_suite.sh runs over every GPU
// case); a block handed over too early shows as a pattern mismatch.
//
// VMM_TEST_TIME_SCALE (set by scripts/gpu_suite.sh under compute-sanitizer)
// stretches the kernels. Catch2 assertions are made on the test's thread.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "tests/conformance/harness.hpp"
#include "tests/gpu/gpu_kernels.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/workspace.hpp"

namespace {

using vmm::MiB;
using vmm::test::time_scale;

struct Written {
  void* ptr;
  std::size_t bytes;
  std::uint8_t value;  // the last value queued over it
  vmm::Stream stream;
};

struct ChurnWorkspace {
  std::unique_ptr<vmm::Workspace> ws;
  vmm::Stream stream;
  std::uint8_t value;
};

}  // namespace

TEST_CASE("churn: resizes and frees under running kernels never fault or share memory",
          "[gpu][churn]") {
  vmm::test::Harness h(vmm::test::make_cuda_test_device());
  vmm::test::TestDevice& dev = h.device();
  std::vector<vmm::Stream> streams = {h.stream(), dev.create_stream(), dev.create_stream()};
  const unsigned kernel_ms = 4 * time_scale();
  std::uint8_t next = 0;
  auto next_value = [&] {
    next = static_cast<std::uint8_t>(next % 250 + 1);
    return next;
  };
  int returned_while_busy = 0;
  {
    vmm::Allocator a(h.context());
    std::vector<ChurnWorkspace> wss;
    for (std::size_t i = 0; i < streams.size(); ++i) {
      wss.push_back({std::make_unique<vmm::Workspace>(h.context(), 512 * MiB), streams[i], 0});
    }
    std::mt19937 rng(20260301);
    std::vector<Written> live;
    for (int round = 0; round < 48; ++round) {
      // A workspace is resized while a kernel writes all of its bytes.
      ChurnWorkspace& w = wss[static_cast<std::size_t>(round) % wss.size()];
      if (w.ws->size() != 0) {
        vmm::test::launch_scribble(w.stream, w.ws->data(), w.ws->size(), w.value, kernel_ms, 64);
      }
      const std::size_t target = (1 + rng() % 96) * MiB + rng() % 4096;
      if (target > w.ws->size()) {
        w.ws->grow_to(target);
      } else {
        w.ws->shrink_to(target, w.stream);  // the kernel still writes the tail
      }
      if (vmm::test::stream_busy(w.stream)) ++returned_while_busy;
      w.value = next_value();
      if (w.ws->size() != 0) {
        vmm::test::launch_scribble(w.stream, w.ws->data(), w.ws->size(), w.value, 0, 64);
      }

      // A block written by a running kernel is freed (or record_stream'd to
      // a second writer first) without waiting for it.
      const std::size_t si = rng() % streams.size();
      const vmm::Stream s = streams[si];
      const vmm::Stream o = streams[(si + 1 + rng() % (streams.size() - 1)) % streams.size()];
      const std::size_t n = (std::size_t{4} << 10) << (rng() % 15);  // 4 KiB .. 64 MiB
      void* p = a.allocate(n, s);
      const std::uint8_t v = next_value();
      vmm::test::launch_scribble(s, p, n, v, kernel_ms, 32);
      switch (rng() % 3) {
        case 0:
          a.deallocate(p);
          break;
        case 1:
          a.record_stream(p, o);
          vmm::test::launch_scribble(o, p, n, v, kernel_ms, 16);
          a.deallocate(p);
          break;
        default:
          live.push_back({p, n, v, s});
          break;
      }
      // Another stream allocates at once: it must not get memory a kernel
      // still writes. Its own one-pass write is checked at the end.
      void* q = a.allocate(n, o);
      const std::uint8_t vq = next_value();
      vmm::test::launch_scribble(o, q, n, vq, 0, 32);
      live.push_back({q, n, vq, o});

      if (live.size() > 12) {
        const std::size_t k = rng() % live.size();
        a.deallocate(live[k].ptr);  // its kernel may still be running
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
      }
      if (round % 8 == 7) a.empty_cache();
      if (round % 8 == 3) a.trim_to_limit();
    }
    // A kernel that touched unmapped memory faults: synchronize throws.
    for (vmm::Stream s : streams) dev.synchronize(s);
    for (const Written& b : live) dev.verify(b.stream, b.ptr, b.bytes, b.value);
    for (const ChurnWorkspace& w : wss) {
      if (w.ws->size() != 0) dev.verify(w.stream, w.ws->data(), w.ws->size(), w.value);
    }
    std::uint64_t mismatched = 0;
    for (vmm::Stream s : streams) mismatched += dev.mismatches(s);
    CHECK(mismatched == 0);
    INFO("resizes that returned while their stream's kernel still ran: " << returned_while_busy);
    CHECK(returned_while_busy > 0);  // nothing waited for the kernels

    for (const Written& b : live) a.deallocate(b.ptr);
    for (ChurnWorkspace& w : wss) w.ws->release(w.stream);
    for (vmm::Stream s : streams) dev.synchronize(s);
    for (std::size_t i = 1; i < streams.size(); ++i) a.release_stream(streams[i]);
    a.empty_cache();
    REQUIRE(h.wait_reclaimed());
    vmm::test::check_accounting(h.context(), a.stats().mapped_bytes);
  }
  for (std::size_t i = 1; i < streams.size(); ++i) dev.destroy_stream(streams[i]);
  CHECK(h.destroy_context_and_check_no_leak());
}
