// Host-only tests of the heap's pieces: size classes, best fit and
// coalescing, growth at the frontier and into vacant ranges, capture
// deferral (a host stream marked capturing), the background trim, the
// thread caches (cross-thread frees, thread exit, empty_cache, trimming
// only idle lists), many threads, and the allocator's C ABI.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "allocator/backend/host_backend.hpp"
#include "allocator/heap/size_classes.hpp"
#include "tests/common/catch.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/vmmalloc.h"

using namespace vmm;
using namespace vmm::test;

namespace {

HostBackend& host_of(Harness& h) { return dynamic_cast<HostBackend&>(h.inner()); }

}  // namespace

TEST_CASE("size classes: small requests within 1/16, large ones to 512 bytes", "[heap]") {
  CHECK(round_request(1) == 512);
  CHECK(round_request(512) == 512);
  CHECK(round_request(513) == 1024);
  for (std::size_t n = 1; n < 4 * MiB; n = n * 5 / 4 + 1) {
    const std::size_t r = round_request(n);
    CAPTURE(n, r);
    CHECK(r >= n);
    CHECK(r % kBlockAlignment == 0);
    if (n >= kSmallLimit) {
      CHECK(r - n < kLargeAlignment);
      CHECK(size_kind(r) == SizeKind::large);
    } else if (n > 8 * KiB) {
      CHECK(static_cast<double>(r - n) <= static_cast<double>(n) / 16.0);
    }
    CHECK(round_request(r) == r);  // classes are fixed points
  }
  CHECK(size_kind(round_request(kSmallLimit - 1)) == SizeKind::large);  // rounds to the limit
  CHECK(size_kind(round_request(900 * KiB)) == SizeKind::small);
}

TEST_CASE("heap: best fit, split and coalesce inside a segment", "[heap]") {
  Harness h(make_host_test_device());
  Allocator a(h.context());
  Stream S = h.stream();
  void* big = a.allocate(16 * MiB, S);
  a.deallocate(big);
  const auto creates = a.stats().chunk_creates;
  // Carve the 16 MiB segment into three blocks: addresses follow each other.
  auto* x = static_cast<char*>(a.allocate(4 * MiB, S));
  auto* y = static_cast<char*>(a.allocate(4 * MiB, S));
  auto* z = static_cast<char*>(a.allocate(4 * MiB, S));
  CHECK(x == big);
  CHECK(y == x + 4 * MiB);
  CHECK(z == y + 4 * MiB);
  CHECK(a.stats().chunk_creates == creates);
  // Free x and y: they coalesce; an 8 MiB request takes exactly them (best
  // fit prefers that 8 MiB hole to the 4 MiB tail, which is too small).
  a.deallocate(x);
  a.deallocate(y);
  void* xy = a.allocate(8 * MiB, S);
  CHECK(xy == x);
  // A 3 MiB request takes the smallest fitting hole: the 4 MiB tail.
  void* t = a.allocate(3 * MiB, S);
  CHECK(t == z + 4 * MiB);
  a.deallocate(t);
  a.deallocate(xy);
  a.deallocate(z);
  // Everything coalesced back: 16 MiB again, no new memory.
  void* again = a.allocate(16 * MiB, S);
  CHECK(again == big);
  CHECK(a.stats().chunk_creates == creates);
  CHECK(a.stats().inactive_split_bytes == 0);
  a.deallocate(again);
}

TEST_CASE("heap: small requests share 2 MiB pages", "[heap]") {
  Harness h(make_host_test_device());
  Allocator a(h.context());
  std::vector<void*> ptrs;
  for (int i = 0; i < 1000; ++i) ptrs.push_back(a.allocate(1000, h.stream()));
  // 1000 x 1024-byte class = 1000 KiB: one 2 MiB page.
  CHECK(a.stats().mapped_bytes == 2 * MiB);
  CHECK(a.stats().allocated_bytes == 1000 * 1024);
  for (void* p : ptrs) a.deallocate(p);
}

TEST_CASE("heap: frees on a capturing stream defer their fences until the capture ends",
          "[heap][capture]") {
  Harness h(make_host_test_device());
  HostBackend& host = host_of(h);
  Allocator a(h.context());
  Stream S = h.stream();
  Stream T = h.device().create_stream();
  host.set_stream_capturing(S, true);
  void* p = a.allocate(6 * MiB, S);  // allocating during a capture works
  a.deallocate(p);                   // a free records nothing
  void* again = a.allocate(6 * MiB, S);
  CHECK(again == p);  // same stream: reused at once
  a.deallocate(again);
  const auto records = host.calls(BackendCall::record_fence);
  void* q = a.allocate(6 * MiB, T);  // another stream: no fence on S, so not p
  CHECK(q != p);
  CHECK(host.calls(BackendCall::record_fence) == records);  // the capture survives
  a.empty_cache();  // cannot unmap p either (its fence is deferred)
  CHECK(host.calls(BackendCall::record_fence) == records);
  CHECK(a.stats().mapped_bytes >= 12 * MiB);
  host.set_stream_capturing(S, false);
  h.device().block(S, 200);  // S is busy after the capture
  // The capture ended: now T may ask for S's fence and, once it completes,
  // take S's memory.
  void* r1 = a.allocate(6 * MiB, T);
  CHECK(host.calls(BackendCall::record_fence) > records);
  h.device().synchronize(S);
  const auto creates = a.stats().chunk_creates;
  void* r2 = a.allocate(6 * MiB, T);
  CHECK(a.stats().chunk_creates == creates);
  a.deallocate(q);
  a.deallocate(r1);
  a.deallocate(r2);
  h.device().synchronize(T);
  a.release_stream(T);
  h.device().destroy_stream(T);
}

TEST_CASE("heap: the background trim unmaps free memory above the cache limit", "[heap][trim]") {
  Config c = test_config();
  c.pool_cache_limit = 8 * MiB;
  Harness h(make_host_test_device(), c);
  Allocator a(h.context());
  std::vector<void*> ptrs;
  for (int i = 0; i < 8; ++i) ptrs.push_back(a.allocate(8 * MiB, h.stream()));
  for (void* p : ptrs) a.deallocate(p);
  a.allocate(0, h.stream());
  // The blocks sit in the hot cache until a slow path folds them in.
  void* probe = a.allocate(100 * MiB, h.stream());
  a.deallocate(probe);
  void* fold = a.allocate(200 * MiB, h.stream());  // a miss: folds the cache in
  a.deallocate(fold);
  void* miss = a.allocate(3 * MiB, h.stream());
  a.deallocate(miss);
  CHECK(a.stats().mapped_bytes >= 200 * MiB);
  // Not at once: the trim keeps what the last 5 s of demand (the 200 MiB
  // block) may want again.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  CHECK(a.stats().mapped_bytes >= 200 * MiB);
  // What may stay once that demand has left the window: the limit, plus the
  // chunk under the 3 MiB block that sits in the hot cache (at most 8 MiB:
  // the smaller stitched chunks come first).
  const std::size_t bound = 8 * MiB + 8 * MiB;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    const AllocatorStats s = a.stats();
    if (s.mapped_bytes + s.cached_bytes + s.pending_bytes <= bound) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const AllocatorStats s = a.stats();
  INFO("mapped " << s.mapped_bytes << " cached " << s.cached_bytes << " pending "
                 << s.pending_bytes);
  CHECK(s.mapped_bytes + s.cached_bytes + s.pending_bytes <= bound);
  CHECK(s.cached_bytes <= 8 * MiB);
}

TEST_CASE("heap: many threads on several streams keep every block intact", "[heap][threads]") {
  Harness h(make_host_test_device());
  Allocator a(h.context());
  std::vector<Stream> streams;
  for (int i = 0; i < 4; ++i) streams.push_back(h.device().create_stream());
#ifdef VMMALLOC_SANITIZER_BUILD
  constexpr int kIterations = 300;
#else
  constexpr int kIterations = 3000;
#endif
  std::atomic<int> corrupt{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      struct Owned {
        unsigned char* p;
        std::size_t n;
        unsigned char v;
      };
      std::vector<Owned> mine;
      const Stream s = streams[static_cast<std::size_t>(t) % streams.size()];
      for (int i = 0; i < kIterations; ++i) {
        try {
          if (mine.size() < 8 && rng() % 2 == 0) {
            const std::size_t n = std::size_t{1} << (6 + rng() % 16);  // 64 B .. 2 MiB
            auto* p = static_cast<unsigned char*>(a.allocate(n, s));
            const auto v = static_cast<unsigned char>(t * 16 + i % 16);
            // Host memory: the test writes it directly (host streams idle).
            std::memset(p, v, std::min<std::size_t>(n, 4096));
            mine.push_back({p, n, v});
          } else if (!mine.empty()) {
            const Owned o = mine.back();
            mine.pop_back();
            for (std::size_t k = 0; k < std::min<std::size_t>(o.n, 4096); ++k) {
              if (o.p[k] != o.v) {
                ++corrupt;
                break;
              }
            }
            a.deallocate(o.p);
          }
        } catch (const std::exception&) {
          ++errors;
        }
      }
      for (const Owned& o : mine) a.deallocate(o.p);
    });
  }
  for (auto& th : threads) th.join();
  CHECK(corrupt == 0);
  CHECK(errors == 0);
  CHECK(a.stats().allocated_bytes == 0);
  CHECK(a.stats().active_blocks == 0);
  CHECK(a.stats().allocations == a.stats().frees);
  for (Stream s : streams) {
    a.release_stream(s);
    h.device().destroy_stream(s);
  }
}

TEST_CASE("C ABI: allocator calls return statuses and never throw", "[c_api][allocator]") {
  // The same settings as c_api_tests.cpp (CTest runs each case in its own
  // process; in one process the first configure wins and this one is refused).
  (void)vmm_configure("backend:host,va_reservation_size:8G");
  const char* backend = nullptr;
  REQUIRE(vmm_backend_name(0, &backend) == VMM_SUCCESS);
  REQUIRE(std::string(backend) == "host");
  void* p = reinterpret_cast<void*>(1);
  REQUIRE(vmm_malloc(&p, 0, 0, nullptr) == VMM_SUCCESS);
  CHECK(p == nullptr);
  REQUIRE(vmm_malloc(&p, 5 * MiB, 0, nullptr) == VMM_SUCCESS);
  REQUIRE(p != nullptr);
  std::memset(p, 1, 5 * MiB);
  std::size_t size = 0;
  REQUIRE(vmm_block_size(p, &size) == VMM_SUCCESS);
  CHECK(size >= 5 * MiB);
  CHECK(vmm_record_stream(p, nullptr) == VMM_SUCCESS);
  CHECK(vmm_record_stream(&size, nullptr) == VMM_ERROR_UNKNOWN_POINTER);

  void* q = reinterpret_cast<void*>(1);
  CHECK(vmm_malloc(&q, std::size_t{1} << 40, 0, nullptr) == VMM_ERROR_OUT_OF_MEMORY);
  CHECK(q == nullptr);
  CHECK(std::string(vmm_last_error()).find("Tried to allocate 1024.00 GiB") != std::string::npos);
  CHECK(vmm_malloc(nullptr, 1, 0, nullptr) == VMM_ERROR_INVALID_VALUE);

  vmm_allocator_stats st{};
  REQUIRE(vmm_get_allocator_stats(0, &st) == VMM_SUCCESS);
  CHECK(st.allocated_bytes == size);
  CHECK(st.active_blocks == 1);
  CHECK(st.ooms == 1);

  REQUIRE(vmm_free(p, nullptr) == VMM_SUCCESS);
  CHECK(vmm_free(p, nullptr) == VMM_ERROR_UNKNOWN_POINTER);
  int local = 0;
  CHECK(vmm_free(&local, nullptr) == VMM_ERROR_UNKNOWN_POINTER);
  CHECK(vmm_block_size(p, &size) == VMM_ERROR_UNKNOWN_POINTER);
  CHECK(vmm_free(nullptr, nullptr) == VMM_SUCCESS);
  std::size_t released = 0;
  REQUIRE(vmm_empty_cache(0, &released) == VMM_SUCCESS);
  CHECK(released >= 4 * MiB);
  REQUIRE(vmm_get_allocator_stats(0, &st) == VMM_SUCCESS);
  CHECK(st.allocated_bytes == 0);
  CHECK(st.frees == 1);
  CHECK(vmm_get_allocator_stats(0, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_release_stream(nullptr) == VMM_SUCCESS);
}

TEST_CASE("heap: a released stream gets no more fences; its memory moves after the last",
          "[heap][streams]") {
  Harness h(make_host_test_device());
  HostBackend& host = host_of(h);
  Allocator a(h.context());
  Stream S = h.device().create_stream();
  Stream T = h.stream();
  void* p = a.allocate(6 * MiB, S);
  h.device().block(S, 200);
  a.deallocate(p);
  a.release_stream(S);  // records S's last fence
  const auto records = host.calls(BackendCall::record_fence);
  h.device().synchronize(S);
  h.device().destroy_stream(S);
  // T may take S's memory (the last fence completed); nothing is recorded
  // on the destroyed S.
  const auto creates = a.stats().chunk_creates;
  void* q = a.allocate(6 * MiB, T);
  CHECK(a.stats().chunk_creates == creates);
  CHECK(host.calls(BackendCall::record_fence) == records);
  a.deallocate(q);
  a.empty_cache();  // one fence, on T (q's stream); none tried on S
  CHECK(host.calls(BackendCall::record_fence) == records + 1);
}

TEST_CASE("heap: new memory continues at the frontier, joining the free tail", "[heap][growth]") {
  Harness h(make_host_test_device());
  Allocator a(h.context());
  Stream S = h.stream();
  // 3 MiB maps 4 MiB; the next 3 MiB starts where the first ends, in the
  // first one's last chunk, so 6 MiB of requests map 6 MiB, not 8.
  auto* p = static_cast<char*>(a.allocate(3 * MiB, S));
  CHECK(a.stats().mapped_bytes == 4 * MiB);
  auto* q = static_cast<char*>(a.allocate(3 * MiB, S));
  CHECK(q == p + 3 * MiB);
  CHECK(a.stats().mapped_bytes == 6 * MiB);
  h.device().fill(S, p, 3 * MiB, 0x11);
  h.device().fill(S, q, 3 * MiB, 0x22);
  h.device().verify(S, p, 3 * MiB, 0x11);
  h.device().verify(S, q, 3 * MiB, 0x22);
  CHECK(h.device().mismatches(S) == 0);
  a.deallocate(p);
  a.deallocate(q);
}

TEST_CASE("heap: the range of stitched-away chunks is mapped again when a request fits it",
          "[heap][growth][stitching]") {
  Harness h(make_host_test_device());
  {
    Allocator a(h.context());
    Stream S = h.stream();
    auto* x = static_cast<char*>(a.allocate(8 * MiB, S));
    void* pin1 = a.allocate(2 * MiB, S);
    void* y = a.allocate(8 * MiB, S);
    void* pin2 = a.allocate(2 * MiB, S);
    a.deallocate(x);
    a.deallocate(y);
    // No free block holds 16 MiB: x's and y's chunks are stitched at the
    // frontier, and their old ranges wait for S's fence.
    const auto creates = a.stats().chunk_creates;
    void* big = a.allocate(16 * MiB, S);
    CHECK(a.stats().chunk_creates == creates);
    CHECK(big != x);
    h.device().synchronize(S);  // the fence is complete: the old mappings may go
    // 8 MiB fits nowhere mapped; x's old range, between the segment's start
    // and pin1, holds it and needs no more new memory than the frontier.
    void* again = a.allocate(8 * MiB, S);
    CHECK(again == x);
    CHECK(a.stats().chunk_creates == creates + 4);
    h.device().fill(S, again, 8 * MiB, 0x33);
    h.device().fill(S, big, 16 * MiB, 0x44);
    h.device().fill(S, pin1, 2 * MiB, 0x55);
    h.device().verify(S, again, 8 * MiB, 0x33);
    h.device().verify(S, big, 16 * MiB, 0x44);
    h.device().verify(S, pin1, 2 * MiB, 0x55);
    CHECK(h.device().mismatches(S) == 0);
    for (void* p : {again, big, pin1, pin2}) a.deallocate(p);
    a.empty_cache();
    REQUIRE(h.wait_reclaimed());
    check_accounting(h.context(), a.stats().mapped_bytes);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEST_CASE("thread caches: a block freed on another thread is reused by its allocating thread",
          "[heap][threads][thread_cache]") {
  Harness h(make_host_test_device());
  Allocator a(h.context());
  Stream S = h.stream();
  void* p = a.allocate(6 * MiB, S);
  std::mutex m;
  std::condition_variable cv;
  int phase = 0;
  std::thread t([&] {
    a.deallocate(p);  // cached by this thread, which stays alive
    std::unique_lock lock(m);
    phase = 1;
    cv.notify_all();
    cv.wait(lock, [&] { return phase == 2; });
  });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return phase == 1; });
  }
  const AllocatorStats before = a.stats();
  CHECK(before.active_blocks == 0);
  CHECK(before.allocated_bytes == 0);
  void* q = a.allocate(6 * MiB, S);  // the same block, from the other thread's cache
  CHECK(q == p);
  const AllocatorStats after = a.stats();
  CHECK(after.chunk_creates == before.chunk_creates);
  CHECK(after.allocations == before.allocations + 1);
  CHECK(after.active_blocks == 1);
  CHECK(after.allocated_bytes == 6 * MiB);
  // One 6 MiB block was ever live at a time: the peaks say so, although this
  // thread allocated it twice and the other thread freed it (per-thread
  // usage deltas must not add up to a peak that never was).
  CHECK(after.peak_allocated_bytes == 6 * MiB);
  CHECK(after.peak_requested_bytes == 6 * MiB);
  {
    std::lock_guard lock(m);
    phase = 2;
  }
  cv.notify_all();
  t.join();
  a.deallocate(q);
  CHECK(a.stats().active_blocks == 0);
  CHECK(a.stats().allocations == a.stats().frees);
}

TEST_CASE("thread caches: an exiting thread's cached blocks go back to the heap",
          "[heap][threads][thread_cache]") {
  Harness h(make_host_test_device());
  Allocator a(h.context());
  Stream S = h.stream();
  void* p = nullptr;
  std::thread([&] {
    p = a.allocate(6 * MiB, S);
    a.deallocate(p);  // in this thread's cache...
  }).join();          // ...handed back as it exits
  const auto creates = a.stats().chunk_creates;
  // A 4 MiB request is no cache hit (another size): the slow path finds
  // the exited thread's 6 MiB block in the free index and splits it.
  void* q = a.allocate(4 * MiB, S);
  CHECK(q == p);
  CHECK(a.stats().chunk_creates == creates);
  a.deallocate(q);
  const AllocatorStats s = a.stats();
  CHECK(s.allocations == 2);
  CHECK(s.frees == 2);
  CHECK(s.active_blocks == 0);
}

TEST_CASE("thread caches: empty_cache returns the blocks other threads hold cached",
          "[heap][threads][thread_cache]") {
  Harness h(make_host_test_device());
  Allocator a(h.context());
  Stream S = h.stream();
  std::mutex m;
  std::condition_variable cv;
  int phase = 0;
  void* p = nullptr;
  std::thread t([&] {
    p = a.allocate(8 * MiB, S);
    a.deallocate(p);  // cached by this thread, which stays alive
    {
      std::unique_lock lock(m);
      phase = 1;
      cv.notify_all();
      cv.wait(lock, [&] { return phase == 2; });
    }
    // Its cache was emptied: this is a miss, served with valid memory.
    void* q = a.allocate(8 * MiB, S);
    h.device().fill(S, q, 8 * MiB, 0x66);
    h.device().verify(S, q, 8 * MiB, 0x66);
    a.deallocate(q);
  });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return phase == 1; });
  }
  CHECK(a.stats().mapped_bytes >= 8 * MiB);
  a.empty_cache();
  CHECK(a.stats().mapped_bytes == 0);
  {
    std::lock_guard lock(m);
    phase = 2;
  }
  cv.notify_all();
  t.join();
  CHECK(h.device().mismatches(S) == 0);
  CHECK(a.stats().active_blocks == 0);
}

TEST_CASE("thread caches: the background trim leaves a cache in steady use alone",
          "[heap][trim][thread_cache]") {
  Config c = test_config();
  c.pool_cache_limit = 4 * MiB;
  Harness h(make_host_test_device(), c);
  HostBackend& host = host_of(h);
  Allocator a(h.context());
  Stream S = h.stream();
  Stream T = h.device().create_stream();
  // An idle cached block keeps free memory above the limit...
  a.deallocate(a.allocate(8 * MiB, S));
  // ...while another thread reuses a 16 MiB block without pause.
  std::atomic<bool> stop{false};
  std::atomic<bool> started{false};
  std::atomic<int> moved{0};
  void* first = nullptr;
  std::thread hot([&] {
    first = a.allocate(16 * MiB, T);
    a.deallocate(first);
    started = true;
    while (!stop.load()) {
      void* p = a.allocate(16 * MiB, T);
      if (p != first) ++moved;
      a.deallocate(p);
    }
  });
  while (!started.load()) std::this_thread::yield();
  // The idle block goes once the trim delay has passed (or was stitched
  // into the hot one); the hot one stays.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (a.stats().mapped_bytes > 16 * MiB && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(a.stats().mapped_bytes == 16 * MiB);
  // From here on (the idle block's unmap done), the hot loop makes no
  // backend call for a while, although free memory stays above the limit.
  REQUIRE(h.wait_reclaimed());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto unmaps = host.calls(BackendCall::unmap);
  const auto creates = a.stats().chunk_creates;
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  stop = true;
  hot.join();
  CHECK(moved == 0);
  CHECK(host.calls(BackendCall::unmap) == unmaps);
  CHECK(a.stats().chunk_creates == creates);
  // Idle now: trimmed to the limit in its turn.
  const auto deadline2 = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (a.stats().mapped_bytes > 4 * MiB && std::chrono::steady_clock::now() < deadline2) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(a.stats().mapped_bytes <= 4 * MiB);
  h.device().synchronize(T);
  a.release_stream(T);
  h.device().destroy_stream(T);
}
