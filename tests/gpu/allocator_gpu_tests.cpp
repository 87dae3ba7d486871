// GPU-only tests of vmm::Allocator: real kernels write blocks while other
// streams and threads allocate. They check what only a GPU shows: a block
// freed while a kernel on its stream still writes it is never handed to
// another stream before that kernel ends (else the pattern of the new owner
// would be overwritten), record_stream is honoured, many threads on several
// streams never share a live block, and a real CUDA-graph capture can
// allocate and free inside a graph pool - the capture survives (no fence is
// recorded or queried on the capturing stream) and the pool's memory is never
// given to other work while the graph replays.
//
// VMM_TEST_TIME_SCALE (set by scripts/gpu_suite.sh under compute-sanitizer)
// stretches the kernels. Catch2 assertions are made on the test's thread only.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "allocator/backend/cuda_backend.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "tests/common/test_device.hpp"
#include "tests/conformance/harness.hpp"
#include "tests/gpu/gpu_kernels.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"

namespace {

using vmm::MiB;
using vmm::test::time_scale;

const unsigned kKernelMs = 300 * time_scale();

bool overlaps(const void* a, std::size_t an, const void* b, std::size_t bn) {
  const auto x = reinterpret_cast<std::uintptr_t>(a);
  const auto y = reinterpret_cast<std::uintptr_t>(b);
  return x < y + bn && y < x + an;
}

}  // namespace

TEST_CASE("allocator: a block freed under a running kernel is not handed to another stream",
          "[gpu][allocator]") {
  vmm::test::Harness h(vmm::test::make_cuda_test_device());
  {
    vmm::Allocator a(h.context());
    vmm::Stream A = h.stream();
    vmm::Stream B = h.device().create_stream();
    for (std::size_t bytes : {std::size_t{64} << 10, 24 * MiB}) {
      void* p = a.allocate(bytes, A);
      vmm::test::launch_scribble(A, p, bytes, 0x11, kKernelMs, 64);
      a.deallocate(p);
      void* q = a.allocate(bytes, B);
      CHECK(vmm::test::stream_busy(A));  // the allocation did not wait for the kernel
      h.device().fill(B, q, bytes, 0x22);
      h.device().synchronize(A);
      h.device().verify(B, q, bytes, 0x22);
      CHECK(h.device().mismatches(B) == 0);
      a.deallocate(q);
    }
    h.device().synchronize(B);
    a.release_stream(B);  // recording on a destroyed CUDA stream is undefined
    h.device().destroy_stream(B);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEST_CASE("allocator: record_stream keeps a block from its own stream while a kernel uses it",
          "[gpu][allocator]") {
  vmm::test::Harness h(vmm::test::make_cuda_test_device());
  {
    vmm::Allocator a(h.context());
    vmm::Stream A = h.stream();
    vmm::Stream B = h.device().create_stream();
    const std::size_t bytes = 16 * MiB;
    void* p = a.allocate(bytes, A);
    a.record_stream(p, B);
    vmm::test::launch_scribble(B, p, bytes, 0x33, kKernelMs, 64);
    a.deallocate(p);
    void* q = a.allocate(bytes, A);
    h.device().fill(A, q, bytes, 0x44);
    h.device().synchronize(B);
    h.device().verify(A, q, bytes, 0x44);
    CHECK(h.device().mismatches(A) == 0);
    a.deallocate(q);
    h.device().synchronize(A);
    a.release_stream(B);
    h.device().destroy_stream(B);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEST_CASE("allocator: 16 threads on 4 streams never share a live block", "[gpu][allocator]") {
  vmm::test::Harness h(vmm::test::make_cuda_test_device());
  std::vector<vmm::Stream> streams;
  for (int i = 0; i < 4; ++i) streams.push_back(h.device().create_stream());
  {
    vmm::Allocator a(h.context());
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 16; ++t) {
      threads.emplace_back([&, t] {
        try {
          std::mt19937 rng(static_cast<unsigned>(t) * 7919u);
          const vmm::Stream s = streams[static_cast<std::size_t>(t) % streams.size()];
          struct Owned {
            void* p;
            std::size_t n;
            std::uint8_t v;
          };
          std::vector<Owned> mine;
          for (int i = 0; i < 400; ++i) {
            if (mine.size() < 6 && rng() % 2 == 0) {
              const std::size_t n = (std::size_t{1} << (8 + rng() % 17)) + rng() % 4096;
              void* p = a.allocate(n, s);
              const auto v = static_cast<std::uint8_t>(1 + (t * 13 + i) % 250);
              h.device().fill(s, p, n, v);
              mine.push_back({p, n, v});
            } else if (!mine.empty()) {
              const std::size_t k = rng() % mine.size();
              h.device().verify(s, mine[k].p, mine[k].n, mine[k].v);
              a.deallocate(mine[k].p);
              mine.erase(mine.begin() + static_cast<std::ptrdiff_t>(k));
            }
          }
          for (const Owned& o : mine) {
            h.device().verify(s, o.p, o.n, o.v);
            a.deallocate(o.p);
          }
        } catch (const std::exception&) {
          ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
    std::uint64_t bad = 0;
    for (vmm::Stream s : streams) bad += h.device().mismatches(s);
    CHECK(bad == 0);
    CHECK(a.stats().active_blocks == 0);
  }
  for (vmm::Stream s : streams) h.device().destroy_stream(s);
  CHECK(h.destroy_context_and_check_no_leak());
}

TEST_CASE("allocator: a CUDA-graph capture allocates and frees in a private pool",
          "[gpu][allocator][graph]") {
  vmm::test::Harness h(vmm::test::make_cuda_test_device());
  {
    vmm::Allocator a(h.context());
    vmm::Stream S = h.stream();
    vmm::Stream T = h.device().create_stream();
    // Some general memory freed on S before the capture, with work behind it.
    void* before = a.allocate(8 * MiB, S);
    h.device().fill(S, before, 8 * MiB, 1);
    a.deallocate(before);
    h.device().synchronize(S);

    const vmm::PoolId pool = a.create_pool();
    vmm::test::begin_capture(S);
    a.begin_pool(pool, S);
    void* x = a.allocate(8 * MiB, S);
    void* y = a.allocate(100000, S);
    vmm::test::launch_scribble(S, x, 8 * MiB, 0x5A, 0, 32);
    a.deallocate(x);  // freed inside the capture: reusable inside the pool
    void* z = a.allocate(8 * MiB, S);
    void* w = a.allocate(20 * MiB, S);  // grows the pool during the capture
    vmm::test::launch_scribble(S, z, 8 * MiB, 0x6B, 0, 32);
    vmm::test::launch_scribble(S, y, 100000, 0x6C, 0, 8);
    vmm::test::launch_scribble(S, w, 20 * MiB, 0x6D, 0, 32);
    a.end_pool(pool);
    void* graph = vmm::test::end_capture(S);  // throws if the capture was invalidated
    REQUIRE(graph != nullptr);
    a.deallocate(w);  // the graph still uses it: stays in the pool

    // While the graph replays, other work allocates on both streams: none
    // of it may land in the pool's memory.
    std::vector<std::pair<void*, std::size_t>> others;
    for (int round = 0; round < 4; ++round) {
      vmm::test::launch_graph(graph, S);
      for (std::size_t n : {8 * MiB, 20 * MiB, std::size_t{100000}}) {
        void* o = a.allocate(n, round % 2 == 0 ? T : S);
        CHECK_FALSE(overlaps(o, n, z, 8 * MiB));
        CHECK_FALSE(overlaps(o, n, y, 100000));
        CHECK_FALSE(overlaps(o, n, w, 20 * MiB));
        h.device().fill(round % 2 == 0 ? T : S, o, n, 0x77);
        others.emplace_back(o, n);
      }
    }
    h.device().synchronize(S);
    h.device().synchronize(T);
    h.device().verify(S, z, 8 * MiB, 0x6B);
    h.device().verify(S, y, 100000, 0x6C);
    for (const auto& [o, n] : others) h.device().verify(T, o, n, 0x77);
    CHECK(h.device().mismatches(S) == 0);
    CHECK(h.device().mismatches(T) == 0);
    for (const auto& [o, n] : others) a.deallocate(o);
    vmm::test::destroy_graph(graph);
    a.deallocate(z);
    a.deallocate(y);
    a.release_pool(pool);
    h.device().synchronize(S);
    a.release_stream(T);
    h.device().destroy_stream(T);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}
