// Allocator conformance suite, one source instantiated per backend:
// HostFixture in vmm_host_tests, CudaFixture in vmm_gpu_tests. Memory is only
// touched through the test device's queued work (fill/verify on a stream), so
// the same assertions hold on host memory and on a GPU. The cases about
// streams and fenced frees are in allocator_stream_conformance.cpp.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tests/common/catch.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"

using namespace vmm;
using namespace vmm::test;

namespace {

struct Live {
  void* ptr;
  std::size_t bytes;
  std::uint8_t value;
};

Config capped_config(std::size_t cap) {
  Config c = test_config();
  c.memory_cap_bytes = cap;
  return c;
}

}  // namespace

TEMPLATE_TEST_CASE("allocator: live blocks are never touched by other allocations",
                   "[conformance][allocator]", VMM_FIXTURES) {
  Harness h(TestType::make());
  std::vector<Live> live;
  {
    Allocator a(h.context());
    std::mt19937_64 rng(42);
    const std::size_t sizes[] = {1,         100,         512,     513,         4096,    70000,
                                 300 * KiB, 1 * MiB - 1, 1 * MiB, 3 * MiB + 7, 9 * MiB, 33 * MiB};
    std::uint8_t next_value = 1;
    for (int step = 0; step < 400; ++step) {
      const bool alloc = live.empty() || rng() % 3 != 0;
      if (alloc) {
        const std::size_t bytes = sizes[rng() % std::size(sizes)];
        void* p = a.allocate(bytes, h.stream());
        REQUIRE(p != nullptr);
        const std::uint8_t v = next_value++;
        if (next_value == 0) next_value = 1;
        h.device().fill(h.stream(), p, bytes, v);
        live.push_back({p, bytes, v});
      } else {
        const std::size_t i = rng() % live.size();
        h.device().verify(h.stream(), live[i].ptr, live[i].bytes, live[i].value);
        a.deallocate(live[i].ptr);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      }
    }
    for (const Live& l : live) h.device().verify(h.stream(), l.ptr, l.bytes, l.value);
    CHECK(h.device().mismatches(h.stream()) == 0);
    const AllocatorStats s = a.stats();
    std::size_t requested = 0;
    for (const Live& l : live) requested += l.bytes;
    CHECK(s.requested_bytes == requested);
    CHECK(s.active_blocks == live.size());
    CHECK(s.allocated_bytes >= requested);
    CHECK(s.mapped_bytes >= s.allocated_bytes);
    for (const Live& l : live) a.deallocate(l.ptr);
    CHECK(a.stats().allocated_bytes == 0);
    check_heap_accounting(h, a);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("allocator: alignment, zero and huge requests", "[conformance][allocator]",
                   VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    CHECK(a.allocate(0, h.stream()) == nullptr);
    std::vector<void*> ptrs;
    for (std::size_t bytes : {std::size_t{1}, std::size_t{511}, std::size_t{513}, std::size_t{5000},
                              2 * MiB + 1, 17 * MiB + 3}) {
      void* p = a.allocate(bytes, h.stream());
      CHECK(reinterpret_cast<std::uintptr_t>(p) % 512 == 0);
      CHECK(a.block_size(p) >= bytes);
      CHECK(a.block_size(p) % 512 == 0);
      ptrs.push_back(p);
    }
    const AllocatorStats before = a.stats();
    CHECK_THROWS_AS(a.allocate(~std::size_t{0}, h.stream()), InvalidArgumentError);
    CHECK_THROWS_AS(a.allocate(std::size_t{1} << 50, h.stream()), OutOfMemoryError);
    const AllocatorStats after = a.stats();
    CHECK(after.allocated_bytes == before.allocated_bytes);
    CHECK(after.chunk_creates == before.chunk_creates);
    // Still usable.
    void* p = a.allocate(3 * MiB, h.stream());
    CHECK(p != nullptr);
    a.deallocate(p);
    for (void* q : ptrs) a.deallocate(q);
    check_heap_accounting(h, a);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("allocator: double free and foreign pointers change nothing",
                   "[conformance][allocator]", VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    void* p = a.allocate(4 * MiB, h.stream());
    void* q = a.allocate(1000, h.stream());
    a.deallocate(p);
    const AllocatorStats before = a.stats();
    CHECK_THROWS_AS(a.deallocate(p), UnknownPointerError);
    int local = 0;
    CHECK_THROWS_AS(a.deallocate(&local), UnknownPointerError);
    CHECK_THROWS_AS(a.deallocate(static_cast<char*>(q) + 512), UnknownPointerError);
    CHECK_THROWS_AS(a.record_stream(p, h.stream()), UnknownPointerError);
    CHECK_THROWS_AS(a.block_size(p), UnknownPointerError);
    const AllocatorStats after = a.stats();
    CHECK(after.allocated_bytes == before.allocated_bytes);
    CHECK(after.frees == before.frees);
    CHECK(after.active_blocks == 1);
    a.deallocate(nullptr);  // no-op
    a.deallocate(q);
    CHECK(a.stats().active_blocks == 0);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("allocator: out of memory under a cap is clean and recoverable",
                   "[conformance][allocator]", VMM_FIXTURES) {
  Harness h(TestType::make(), capped_config(64 * MiB));
  {
    Allocator a(h.context());
    void* p = a.allocate(40 * MiB, h.stream());
    void* small = a.allocate(1000, h.stream());
    const AllocatorStats before = a.stats();
    std::string message;
    try {
      a.allocate(40 * MiB, h.stream());
      FAIL("allocation beyond the cap succeeded");
    } catch (const OutOfMemoryError& e) {
      message = e.what();
    }
    INFO(message);
    CHECK(message.rfind("CUDA out of memory. Tried to allocate 40.00 MiB. GPU ", 0) == 0);
    CHECK(message.find("64.00 MiB allowed; ") != std::string::npos);
    CHECK(message.find("is reserved by vmmalloc but unallocated") != std::string::npos);
    CHECK(message.find("on device " + std::to_string(h.context().device())) != std::string::npos);
    CHECK(message.find("total capacity") != std::string::npos);
    CHECK(message.find("memory cap 64 MiB") != std::string::npos);
    CHECK(message.find("in use") != std::string::npos);
    CHECK(message.find("cached") != std::string::npos);
    CHECK(message.find("pending reclaim") != std::string::npos);
    CHECK(message.find("largest request that would fit") != std::string::npos);
    const AllocatorStats after = a.stats();
    CHECK(after.ooms == before.ooms + 1);
    CHECK(after.allocated_bytes == before.allocated_bytes);
    CHECK(h.context().pool().stats().created_bytes <= 64 * MiB);
    check_heap_accounting(h, a);
    // Freeing makes room: the same request now succeeds.
    a.deallocate(p);
    void* q = a.allocate(40 * MiB, h.stream());
    CHECK(q != nullptr);
    h.device().fill(h.stream(), q, 40 * MiB, 7);
    h.device().verify(h.stream(), q, 40 * MiB, 7);
    CHECK(h.device().mismatches(h.stream()) == 0);
    a.deallocate(q);
    a.deallocate(small);
    check_heap_accounting(h, a);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("allocator: a fault at any driver call leaks nothing",
                   "[conformance][allocator][fault_injection]", VMM_FIXTURES) {
  const BackendCall kinds[] = {BackendCall::reserve,     BackendCall::create, BackendCall::map,
                               BackendCall::set_access,  BackendCall::unmap,  BackendCall::release,
                               BackendCall::record_fence};
  for (BackendCall kind : kinds) {
    for (std::uint64_t n = 1; n <= 6; ++n) {
      Harness h(TestType::make());
      {
        Allocator a(h.context());
        Stream other = h.device().create_stream();
        h.faults().fail_nth(kind, n);
        std::vector<void*> live;
        // A workload with grows, stitching, cross-stream reuse and trims.
        for (int round = 0; round < 3; ++round) {
          for (std::size_t bytes : {3 * MiB, std::size_t{5000}, 9 * MiB, 2 * MiB}) {
            try {
              live.push_back(a.allocate(bytes, round == 1 ? other : h.stream()));
            } catch (const Error&) {
            }
          }
          if (round == 0) {
            for (void* p : live) a.deallocate(p);
            live.clear();
          }
          try {
            a.empty_cache();
          } catch (const Error&) {
          }
        }
        h.faults().disarm();
        for (void* p : live) a.deallocate(p);
        h.device().synchronize(other);
        CAPTURE(backend_call_name(kind), n);
        check_heap_accounting(h, a);
        a.release_stream(other);
        h.device().destroy_stream(other);
      }
      CHECK(h.destroy_context_and_check_no_leak());
    }
  }
}

TEMPLATE_TEST_CASE("allocator: a buffer freed and allocated larger grows in place past 1 GiB",
                   "[conformance][allocator]", VMM_FIXTURES) {
  // A workspace resized by free + allocate (PyTorch's `del buf; buf =
  // torch.empty(n)` with vmmalloc installed): the freed block sits at its
  // segment's frontier, and the larger one is that block plus fresh memory
  // mapped behind it - same address, nothing mapped twice, nothing unmapped -
  // also past the 1 GiB that a growing segment's address range used to start
  // at (then each growth beyond it stitched the chunks into a new segment).
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    Stream s = h.stream();
    const std::uint64_t maps0 = h.faults().calls(BackendCall::map);
    const std::uint64_t creates0 = h.faults().calls(BackendCall::create);
    const std::uint64_t unmaps0 = h.faults().calls(BackendCall::unmap);
    void* first = nullptr;
    for (std::size_t mib : {256, 768, 1536}) {
      void* p = a.allocate(mib * MiB, s);
      if (first == nullptr) first = p;
      CHECK(p == first);
      h.device().fill(s, p, mib * MiB, 0x5a);
      h.device().verify(s, p, mib * MiB, 0x5a);
      a.deallocate(p);
    }
    CHECK(h.device().mismatches(s) == 0);
    const std::uint64_t maps = h.faults().calls(BackendCall::map) - maps0;
    const std::uint64_t creates = h.faults().calls(BackendCall::create) - creates0;
    INFO(creates << " chunks created, " << maps << " maps");
    CHECK(maps == creates);
    CHECK(h.faults().calls(BackendCall::unmap) == unmaps0);
    check_heap_accounting(h, a);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("allocator: graph pools keep their memory private",
                   "[conformance][allocator][pools]", VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    Stream S = h.stream();
    const PoolId pool = a.create_pool();
    CHECK(pool != 0);
    a.begin_pool(pool, S);
    void* g1 = a.allocate(6 * MiB, S);
    void* g2 = a.allocate(2000, S);
    a.deallocate(g1);  // back to the pool: a later pool allocation may reuse it
    void* g3 = a.allocate(6 * MiB, S);
    CHECK(g3 == g1);
    a.end_pool(pool);
    a.deallocate(g3);
    a.deallocate(g2);
    // Outside the pool, even on the same stream, pool memory is not used.
    void* o1 = a.allocate(6 * MiB, S);
    void* o2 = a.allocate(2000, S);
    CHECK(o1 != g1);
    CHECK(o2 != g2);
    h.device().fill(S, o1, 6 * MiB, 1);
    a.deallocate(o1);
    a.deallocate(o2);
    a.empty_cache();  // never unmaps pool memory
    a.begin_pool(pool, S);
    void* g4 = a.allocate(6 * MiB, S);
    CHECK(g4 == g1);
    a.end_pool(pool);
    CHECK_THROWS_AS(a.begin_pool(12345, S), InvalidArgumentError);
    a.release_pool(pool);  // g4 still live: the pool returns once it is freed
    a.deallocate(g4);
    CHECK_THROWS_AS(a.begin_pool(pool, S), InvalidArgumentError);
    const auto creates = a.stats().chunk_creates;
    void* after = a.allocate(6 * MiB, S);  // general use now may take it
    CHECK(a.stats().chunk_creates == creates);
    a.deallocate(after);
    check_heap_accounting(h, a);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("allocator: empty_cache returns memory without waiting",
                   "[conformance][allocator]", VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    Stream A = h.stream();
    void* p = a.allocate(32 * MiB, A);
    void* keep = a.allocate(1000, A);
    h.device().block(A, 400);
    h.device().fill(A, p, 32 * MiB, 9);
    a.deallocate(p);
    const auto t0 = std::chrono::steady_clock::now();
    const std::size_t released = a.empty_cache();
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    CHECK(ms < 200.0);
    CHECK(released >= 32 * MiB);
    CHECK(a.stats().mapped_bytes < 32 * MiB);
    CHECK(a.stats().pending_bytes >= 32 * MiB);  // unmapped once A's work is done
    REQUIRE(h.wait_reclaimed());
    h.context().pool().trim(0);
    CHECK(h.context().pool().stats().created_bytes == a.stats().mapped_bytes);
    a.deallocate(keep);
    check_heap_accounting(h, a);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("allocator: stitching reuses free chunks instead of creating memory",
                   "[conformance][allocator][stitching]", VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    Stream S = h.stream();
    // Four 8 MiB blocks, each followed by a live 2 MiB pin, then freed: no
    // free block is large enough for 32 MiB, but their chunks are.
    std::vector<void*> blocks;
    std::vector<void*> pins;
    for (int i = 0; i < 4; ++i) {
      blocks.push_back(a.allocate(8 * MiB, S));
      pins.push_back(a.allocate(2 * MiB, S));
    }
    for (void* p : blocks) a.deallocate(p);
    const AllocatorStats before = a.stats();
    void* big = a.allocate(32 * MiB, S);
    const AllocatorStats after = a.stats();
    CHECK(after.chunk_creates == before.chunk_creates);
    CHECK(after.stitches == before.stitches + 1);
    CHECK(h.context().pool().stats().peak_created_bytes == 40 * MiB);
    h.device().fill(S, big, 32 * MiB, 0x77);
    for (void* p : pins) h.device().fill(S, p, 2 * MiB, 0x78);
    h.device().verify(S, big, 32 * MiB, 0x77);
    for (void* p : pins) h.device().verify(S, p, 2 * MiB, 0x78);
    CHECK(h.device().mismatches(S) == 0);
    a.deallocate(big);
    for (void* p : pins) a.deallocate(p);
    REQUIRE(h.wait_reclaimed());  // the old addresses are unmapped
    check_heap_accounting(h, a);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("allocator: the memory cap set at run time (PyTorch's memory fraction)",
                   "[conformance][allocator][cap]", VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    CHECK(a.memory_cap() == 0);
    CHECK(a.memory_fraction() == 1.0);
    void* p = a.allocate(40 * MiB, h.stream());
    void* q = a.allocate(20 * MiB, h.stream());
    a.deallocate(q);
    a.empty_cache();
    h.context().reclaimer().drain();
    // A cap of 64 MiB: 40 MiB in use, 24 MiB more at most.
    a.set_memory_cap(64 * MiB);
    CHECK(a.memory_cap() == 64 * MiB);
    const double total = static_cast<double>(h.context().backend().memory_info().total_bytes);
    CHECK(a.memory_fraction() == Approx(64.0 * MiB / total));
    CHECK_THROWS_AS(a.allocate(40 * MiB, h.stream()), OutOfMemoryError);
    CHECK(h.context().pool().stats().created_bytes <= 64 * MiB);
    void* small = a.allocate(8 * MiB, h.stream());  // fits under the cap
    h.device().fill(h.stream(), small, 8 * MiB, 3);
    // Raised again (as a fraction): the refused request succeeds.
    a.set_memory_fraction(1.0);
    CHECK(a.memory_fraction() == 1.0);
    void* big = a.allocate(40 * MiB, h.stream());
    h.device().fill(h.stream(), big, 40 * MiB, 4);
    h.device().verify(h.stream(), small, 8 * MiB, 3);
    h.device().verify(h.stream(), big, 40 * MiB, 4);
    CHECK(h.device().mismatches(h.stream()) == 0);
    // Out of range: refused, the cap unchanged.
    for (double bad : {-0.5, 1.5, std::nan("")}) {
      CAPTURE(bad);
      CHECK_THROWS_AS(a.set_memory_fraction(bad), InvalidArgumentError);
    }
    CHECK(a.memory_fraction() == 1.0);
    CHECK(a.memory_cap() == 0);  // 1.0 is no cap, as in PyTorch
    // 0: no new device memory at all (PyTorch's meaning); what is mapped serves.
    a.set_memory_fraction(0.0);
    CHECK(a.memory_fraction() == 0.0);  // the fraction set, as PyTorch answers it
    CHECK_THROWS_AS(a.allocate(64 * MiB, h.stream()), OutOfMemoryError);
    // A fraction reads back exactly as set (the cap itself is rounded down
    // to the granularity); a cap set in bytes reads as cap / total again.
    a.set_memory_fraction(0.3);
    CHECK(a.memory_fraction() == 0.3);
    CHECK(a.memory_cap() <= static_cast<std::size_t>(0.3 * total));
    a.set_memory_cap(64 * MiB);
    CHECK(a.memory_fraction() == Approx(64.0 * MiB / total));
    a.set_memory_fraction(1.0);
    // A lower cap releases cached chunks above it at once.
    a.deallocate(big);
    a.empty_cache();
    h.context().reclaimer().drain();
    a.set_memory_cap(0);
    CHECK(a.memory_cap() == 0);
    a.deallocate(small);
    a.deallocate(p);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}
