// The allocator's usage counters (allocator/heap/usage_counters.hpp) as
// AllocatorStats reports them: running totals (bytes allocated and freed so
// far, rounded and requested), peaks (of bytes, requested bytes and live
// blocks) and the small/large split, exact for one thread (thread-cache hits
// included) and after reset_peak_stats; totals consistent across several
// threads at rest; num_alloc_retries; the C struct's copy of the new fields.
#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <random>
#include <string_view>
#include <thread>
#include <vector>

#include "allocator/heap/size_classes.hpp"
#include "tests/common/catch.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/vmmalloc.h"

using namespace vmm;
using namespace vmm::test;

namespace {

// What a test expects of one size kind (or of both).
struct Expect {
  std::uint64_t bytes_in = 0, bytes_out = 0;          // rounded, allocated / freed so far
  std::uint64_t requested_in = 0, requested_out = 0;  // as requested
  std::uint64_t blocks_in = 0, blocks_out = 0;        // allocations / frees

  void allocated(std::size_t rounded, std::size_t requested) {
    bytes_in += rounded;
    requested_in += requested;
    ++blocks_in;
  }
  void freed(std::size_t rounded, std::size_t requested) {
    bytes_out += rounded;
    requested_out += requested;
    ++blocks_out;
  }
  Expect& operator+=(const Expect& o) {
    bytes_in += o.bytes_in, bytes_out += o.bytes_out;
    requested_in += o.requested_in, requested_out += o.requested_out;
    blocks_in += o.blocks_in, blocks_out += o.blocks_out;
    return *this;
  }
};

// Expected figures by kind: [0] small, [1] large.
struct ExpectKinds {
  Expect kind[2];
  void allocated(std::size_t rounded, std::size_t requested) {
    kind[static_cast<int>(size_kind(rounded))].allocated(rounded, requested);
  }
  void freed(std::size_t rounded, std::size_t requested) {
    kind[static_cast<int>(size_kind(rounded))].freed(rounded, requested);
  }
  Expect all() const {
    Expect e = kind[0];
    e += kind[1];
    return e;
  }
};

// Every current figure and running total of `s` against `e` (not the peaks).
void check_figures(const AllocatorStats& s, const ExpectKinds& e) {
  const Expect a = e.all();
  const Expect& sm = e.kind[0];
  const Expect& lg = e.kind[1];
  CHECK(s.total_allocated_bytes == a.bytes_in);
  CHECK(s.total_freed_bytes == a.bytes_out);
  CHECK(s.allocated_bytes == a.bytes_in - a.bytes_out);
  CHECK(s.total_requested_bytes == a.requested_in);
  CHECK(s.total_freed_requested_bytes == a.requested_out);
  CHECK(s.requested_bytes == a.requested_in - a.requested_out);
  CHECK(s.allocations == a.blocks_in);
  CHECK(s.frees == a.blocks_out);
  CHECK(s.active_blocks == a.blocks_in - a.blocks_out);

  CHECK(s.small_total_allocated_bytes == sm.bytes_in);
  CHECK(s.small_total_freed_bytes == sm.bytes_out);
  CHECK(s.small_allocated_bytes == sm.bytes_in - sm.bytes_out);
  CHECK(s.small_total_requested_bytes == sm.requested_in);
  CHECK(s.small_total_freed_requested_bytes == sm.requested_out);
  CHECK(s.small_requested_bytes == sm.requested_in - sm.requested_out);
  CHECK(s.small_allocations == sm.blocks_in);
  CHECK(s.small_frees == sm.blocks_out);
  CHECK(s.small_active_blocks == sm.blocks_in - sm.blocks_out);

  CHECK(s.large_total_allocated_bytes == lg.bytes_in);
  CHECK(s.large_total_freed_bytes == lg.bytes_out);
  CHECK(s.large_allocated_bytes == lg.bytes_in - lg.bytes_out);
  CHECK(s.large_total_requested_bytes == lg.requested_in);
  CHECK(s.large_total_freed_requested_bytes == lg.requested_out);
  CHECK(s.large_requested_bytes == lg.requested_in - lg.requested_out);
  CHECK(s.large_allocations == lg.blocks_in);
  CHECK(s.large_frees == lg.blocks_out);
  CHECK(s.large_active_blocks == lg.blocks_in - lg.blocks_out);
}

// Every peak of `s` equals its current figure (right after reset_peak_stats).
void check_peaks_at_current(const AllocatorStats& s) {
  CHECK(s.peak_allocated_bytes == s.allocated_bytes);
  CHECK(s.peak_requested_bytes == s.requested_bytes);
  CHECK(s.peak_active_blocks == s.active_blocks);
  CHECK(s.peak_small_allocated_bytes == s.small_allocated_bytes);
  CHECK(s.peak_small_requested_bytes == s.small_requested_bytes);
  CHECK(s.peak_small_active_blocks == s.small_active_blocks);
  CHECK(s.peak_large_allocated_bytes == s.large_allocated_bytes);
  CHECK(s.peak_large_requested_bytes == s.large_requested_bytes);
  CHECK(s.peak_large_active_blocks == s.large_active_blocks);
}

Config capped_config(std::size_t cap) {
  Config c = test_config();
  c.memory_cap_bytes = cap;
  return c;
}

}  // namespace

// One thread's allocations and frees on one heap, with what they should count.
struct OneThread {
  Harness h{make_host_test_device()};
  Allocator a{h.context()};
  ExpectKinds e;

  void* alloc(std::size_t bytes) {
    void* p = a.allocate(bytes, h.stream());
    CHECK(a.block_size(p) == round_request(bytes));
    e.allocated(round_request(bytes), bytes);
    return p;
  }
  void free_block(void* p, std::size_t bytes) {
    a.deallocate(p);
    e.freed(round_request(bytes), bytes);
  }
};

TEST_CASE("stats: running totals, peaks and the small/large split are exact for one thread",
          "[stats][heap]") {
  OneThread o;
  const std::size_t r1 = round_request(1000), r2 = round_request(300 * KiB + 1);
  const std::size_t r3 = 3 * MiB, r4 = round_request(5 * MiB + 1000);
  REQUIRE(size_kind(r2) == SizeKind::small);
  REQUIRE(r4 == round_request(5 * MiB + 600));  // the same cache list

  void* p1 = o.alloc(1000);
  void* p2 = o.alloc(300 * KiB + 1);
  void* p3 = o.alloc(3 * MiB);
  void* p4 = o.alloc(5 * MiB + 1000);
  AllocatorStats s = o.a.stats();
  check_figures(s, o.e);
  check_peaks_at_current(s);  // nothing was ever freed: the peaks are now
  CHECK(s.small_allocated_bytes == r1 + r2);
  CHECK(s.large_allocated_bytes == r3 + r4);
  CHECK(s.small_active_blocks == 2);
  CHECK(s.large_active_blocks == 2);

  // A free and a thread-cache hit of the same rounded size, asked smaller.
  o.free_block(p4, 5 * MiB + 1000);
  void* p5 = o.alloc(5 * MiB + 600);
  CHECK(p5 == p4);
  s = o.a.stats();
  check_figures(s, o.e);
  CHECK(s.large_total_allocated_bytes == r3 + 2 * r4);
  CHECK(s.large_total_freed_bytes == r4);
  CHECK(s.peak_large_allocated_bytes == r3 + r4);  // never more live at once
  CHECK(s.peak_large_requested_bytes == 3 * MiB + 5 * MiB + 1000);
  CHECK(s.peak_requested_bytes == 1000 + 300 * KiB + 1 + 3 * MiB + 5 * MiB + 1000);
  CHECK(s.peak_allocated_bytes == r1 + r2 + r3 + r4);
  CHECK(s.peak_active_blocks == 4);
  CHECK(s.peak_large_active_blocks == 2);

  o.free_block(p1, 1000);
  o.free_block(p2, 300 * KiB + 1);
  o.free_block(p3, 3 * MiB);
  o.free_block(p5, 5 * MiB + 600);
  s = o.a.stats();
  check_figures(s, o.e);
  CHECK(s.allocated_bytes == 0);
  CHECK(s.total_allocated_bytes == s.total_freed_bytes);
  CHECK(s.small_total_allocated_bytes == r1 + r2);
  CHECK(s.small_total_freed_bytes == r1 + r2);
  CHECK(s.peak_small_allocated_bytes == r1 + r2);
  CHECK(s.peak_small_requested_bytes == 1000 + 300 * KiB + 1);
  CHECK(s.peak_small_active_blocks == 2);
  CHECK(s.peak_active_blocks == 4);
  CHECK(s.alloc_retries == 0);
}

TEST_CASE("stats: reset_peak_stats resets every peak, and a 1 MiB block is large",
          "[stats][heap]") {
  OneThread o;
  const std::size_t r1 = round_request(1000), r4 = round_request(5 * MiB + 1000);
  void* p1 = o.alloc(1000);
  void* p2 = o.alloc(300 * KiB + 1);
  void* p4 = o.alloc(5 * MiB + 1000);
  o.free_block(p1, 1000);
  o.free_block(p2, 300 * KiB + 1);

  // Every peak becomes its current figure; the totals stay.
  o.a.reset_peak_stats();
  AllocatorStats s = o.a.stats();
  check_peaks_at_current(s);
  check_figures(s, o.e);
  CHECK(s.peak_allocated_bytes == r4);
  CHECK(s.peak_small_allocated_bytes == 0);
  CHECK(s.peak_active_blocks == 1);

  // The peaks rise again from there: a small cache hit, then a block of
  // exactly 1 MiB, which is large here (PyTorch's small pool takes it).
  void* q1 = o.alloc(1000);
  CHECK(q1 == p1);
  void* q2 = o.alloc(kSmallLimit);
  s = o.a.stats();
  check_figures(s, o.e);
  CHECK(s.large_active_blocks == 2);
  CHECK(s.peak_small_allocated_bytes == r1);
  CHECK(s.peak_small_active_blocks == 1);
  CHECK(s.peak_large_allocated_bytes == r4 + kSmallLimit);
  CHECK(s.peak_allocated_bytes == r1 + r4 + kSmallLimit);
  CHECK(s.peak_active_blocks == 3);
  o.free_block(q1, 1000);
  o.free_block(q2, kSmallLimit);
  o.free_block(p4, 5 * MiB + 1000);
  s = o.a.stats();
  check_figures(s, o.e);
  CHECK(s.peak_allocated_bytes == r1 + r4 + kSmallLimit);
}

namespace {

// kThreads threads allocate and free at random (some blocks freed by another
// thread), stopping at two barriers while alive so the counts are read at
// rest with unpublished deltas.
class Crowd {
 public:
  static constexpr int kThreads = 8;
  static constexpr int kFirstBlocks = 20;  // each thread's phase-0 allocations
  struct Block {
    void* ptr;
    std::size_t bytes;
  };

  explicit Crowd(Allocator& a, Stream stream) : a_(a), stream_(stream), expect_(kThreads) {}
  Crowd(const Crowd&) = delete;
  Crowd& operator=(const Crowd&) = delete;
  ~Crowd() {
    release(2);
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  void start() {
    for (int t = 0; t < kThreads; ++t) threads_.emplace_back([this, t] { work(t); });
  }
  // Waits until every thread reached barrier `n` (1 or 2).
  void wait_for(int n) {
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return arrived_ == n * kThreads; });
  }
  void release(int p) {
    {
      std::lock_guard lock(m_);
      phase_ = p;
    }
    cv_.notify_all();
  }
  // Joins the threads, then frees what they handed off and left.
  void finish() {
    for (std::thread& t : threads_) t.join();
    for (const Block& b : handoff_) {
      expect_[0].freed(round_request(b.bytes), b.bytes);
      a_.deallocate(b.ptr);
    }
    handoff_.clear();
  }
  ExpectKinds expected() const {
    ExpectKinds sum;
    for (const ExpectKinds& x : expect_) {
      for (int k = 0; k < 2; ++k) sum.kind[k] += x.kind[k];
    }
    return sum;
  }
  std::vector<std::size_t> first_live() const { return first_live_; }

 private:
  void barrier(int until) {
    std::unique_lock lock(m_);
    ++arrived_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return phase_ >= until; });
  }
  void alloc(int t, std::mt19937_64& rng, std::vector<Block>& live) {
    static constexpr std::size_t kSizes[] = {100,         4096,    70000,       300 * KiB,
                                             1 * MiB - 1, 1 * MiB, 3 * MiB + 7, 9 * MiB};
    const std::size_t bytes = kSizes[rng() % std::size(kSizes)];
    void* p = a_.allocate(bytes, stream_);
    expect_[static_cast<std::size_t>(t)].allocated(a_.block_size(p), bytes);
    live.push_back({p, bytes});
  }
  void free_block(int t, Block b) {
    expect_[static_cast<std::size_t>(t)].freed(round_request(b.bytes), b.bytes);
    a_.deallocate(b.ptr);
  }
  void work(int t);

  Allocator& a_;
  const Stream stream_;
  std::vector<ExpectKinds> expect_;  // each thread's own, read after a barrier
  std::vector<std::size_t> first_live_ = std::vector<std::size_t>(kThreads, 0);
  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable cv_;
  int arrived_ = 0;
  int phase_ = 0;
  std::vector<Block> handoff_;  // freed by another thread than their allocator
};

void Crowd::work(int t) {
  std::mt19937_64 rng(static_cast<std::uint64_t>(t) + 1);
  std::vector<Block> live;
  // Phase 0: allocations only, so the real peak is every thread's sum.
  for (int i = 0; i < kFirstBlocks; ++i) alloc(t, rng, live);
  for (const Block& b : live) first_live_[static_cast<std::size_t>(t)] += round_request(b.bytes);
  barrier(1);
  // Phase 1: a random mix; some blocks are freed by other threads.
  for (int step = 0; step < 3000; ++step) {
    const auto r = rng() % 8;
    if (live.empty() || r < 4) {
      alloc(t, rng, live);
    } else if (r == 4) {
      std::lock_guard lock(m_);
      handoff_.push_back(live.back());
      live.pop_back();
    } else if (r == 5) {
      std::unique_lock lock(m_);
      if (handoff_.empty()) continue;
      const Block b = handoff_.back();
      handoff_.pop_back();
      lock.unlock();
      free_block(t, b);
    } else {
      const std::size_t i = rng() % live.size();
      free_block(t, live[i]);
      live[i] = live.back();
      live.pop_back();
    }
  }
  barrier(2);  // parked, alive, with blocks live and deltas unpublished
  for (const Block& b : live) free_block(t, b);
}

}  // namespace

TEST_CASE("stats: totals agree across threads at rest, and peaks are never counted high",
          "[stats][heap][threads]") {
  Harness h(make_host_test_device());
  Allocator a(h.context());
  a.reset_peak_stats();
  Crowd crowd(a, h.stream());
  crowd.start();

  crowd.wait_for(1);
  AllocatorStats s = a.stats();
  check_figures(s, crowd.expected());
  const std::vector<std::size_t> first = crowd.first_live();
  std::size_t sum = 0;
  for (std::size_t b : first) sum += b;
  // Each thread saw at least its own blocks; nobody saw more than all.
  CHECK(s.peak_allocated_bytes <= sum);
  CHECK(s.peak_allocated_bytes >= *std::max_element(first.begin(), first.end()));
  CHECK(s.peak_active_blocks <= Crowd::kFirstBlocks * Crowd::kThreads);
  CHECK(s.peak_active_blocks >= Crowd::kFirstBlocks);
  crowd.release(1);

  crowd.wait_for(2);
  s = a.stats();
  check_figures(s, crowd.expected());
  CHECK(s.peak_allocated_bytes >= s.allocated_bytes);
  CHECK(s.peak_small_active_blocks >= s.small_active_blocks);
  CHECK(s.peak_large_requested_bytes >= s.large_requested_bytes);
  crowd.release(2);

  crowd.finish();  // the threads' counts are published now (they exited)
  s = a.stats();
  check_figures(s, crowd.expected());
  CHECK(s.allocated_bytes == 0);
  CHECK(s.active_blocks == 0);
  CHECK(s.small_requested_bytes == 0);
  CHECK(s.total_allocated_bytes > 0);
  CHECK(s.total_allocated_bytes == s.total_freed_bytes);
}

TEST_CASE("stats: an allocation tried again after reclaiming memory counts a retry",
          "[stats][heap][cap]") {
  Harness h(make_host_test_device(), capped_config(64 * MiB));
  Allocator a(h.context());
  const Stream A = h.stream();
  const Stream B = h.device().create_stream();
  // 40 MiB freed on A while A is busy: B may not have it yet, and the cap
  // leaves no room for 40 MiB more. The first growth fails; the retry waits
  // for A's work and takes the block.
  void* p = a.allocate(40 * MiB, A);
  h.device().block(A, 200);
  a.deallocate(p);
  void* q = a.allocate(40 * MiB, B);
  AllocatorStats s = a.stats();
  CHECK(s.alloc_retries == 1);
  CHECK(s.ooms == 0);
  // Beyond the cap: tried again, then out of memory.
  CHECK_THROWS_AS(a.allocate(100 * MiB, B), OutOfMemoryError);
  s = a.stats();
  CHECK(s.alloc_retries == 2);
  CHECK(s.ooms == 1);
  a.deallocate(q);
  h.device().synchronize(B);
  a.release_stream(B);
  h.device().destroy_stream(B);
}

TEST_CASE("stats: the C struct carries every counter, the new ones included",
          "[stats][c_api][allocator]") {
  // The settings of heap_tests.cpp's C ABI case (each case runs in its own
  // process; in one process the first configure wins).
  (void)vmm_configure("backend:host,va_reservation_size:8G");
  void* small = nullptr;
  void* large = nullptr;
  REQUIRE(vmm_malloc(&small, 1000, 0, nullptr) == VMM_SUCCESS);
  REQUIRE(vmm_malloc(&large, 3 * MiB, 0, nullptr) == VMM_SUCCESS);
  vmm_allocator_stats c{};
  REQUIRE(vmm_get_allocator_stats(0, &c) == VMM_SUCCESS);
  const AllocatorStats s = Allocator::instance(0).stats();
  // Field for field, but those the background reclaimer may move between
  // the two reads.
  constexpr std::string_view kMoving[] = {"reserved_bytes", "peak_reserved_bytes", "mapped_bytes",
                                          "cached_bytes",   "pending_bytes",       "chunk_creates",
                                          "chunk_releases", "inactive_split_bytes"};
  auto moving = [&](std::string_view name) {
    return std::find(std::begin(kMoving), std::end(kMoving), name) != std::end(kMoving);
  };
#define VMM_CHECK_COPIED_(type, name, key, meaning)                                  \
  if (!moving(#name)) {                                                              \
    INFO(#name);                                                                     \
    CHECK(static_cast<std::uint64_t>(c.name) == static_cast<std::uint64_t>(s.name)); \
  }
  VMM_ALLOCATOR_STATS(VMM_CHECK_COPIED_)
#undef VMM_CHECK_COPIED_
  const std::size_t r1 = round_request(1000);
  CHECK(c.small_allocated_bytes == r1);
  CHECK(c.small_requested_bytes == 1000);
  CHECK(c.small_active_blocks == 1);
  CHECK(c.large_allocated_bytes == 3 * MiB);
  CHECK(c.large_allocations == 1);
  CHECK(c.total_allocated_bytes == r1 + 3 * MiB);
  CHECK(c.total_requested_bytes == 1000 + 3 * MiB);
  CHECK(c.peak_active_blocks == 2);
  CHECK(c.alloc_retries == 0);
  REQUIRE(vmm_free(small, nullptr) == VMM_SUCCESS);
  REQUIRE(vmm_free(large, nullptr) == VMM_SUCCESS);
  REQUIRE(vmm_get_allocator_stats(0, &c) == VMM_SUCCESS);
  CHECK(c.total_freed_bytes == r1 + 3 * MiB);
  CHECK(c.total_freed_requested_bytes == 1000 + 3 * MiB);
  CHECK(c.small_frees == 1);
  CHECK(c.large_total_freed_bytes == 3 * MiB);
  CHECK(c.allocated_bytes == 0);
  CHECK(c.peak_allocated_bytes == r1 + 3 * MiB);
}
