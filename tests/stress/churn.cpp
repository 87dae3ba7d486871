// vmm_churn: threads created and retired continuously while they allocate
// and free, as mimalloc's stress test does, so thread caches are handed back
// (and blocks freed by threads that did not allocate them) under load; at
// the end the accounting must be exact and nothing lost. Host backend.
//
//   vmm_churn [--slots N] [--operations N] [--per-thread N] [--transfer N]
//             [--streams N] [--seed N] [--json]
//
// SLOTS threads run at any time; each lives for PER-THREAD operations and is
// then replaced by a new one, until OPERATIONS operations were done in all.
// An operation is one of:
//   allocate   a block (mostly 17 B .. 16 KiB, 1 in 16 up to 1 MiB, 1 in 256
//              up to 8 MiB) on one of STREAMS streams, its first 16 bytes
//              written with its size and a cookie of its address, its last
//              byte with the cookie's low byte;
//   free       one of the thread's blocks, checked first;
//   transfer   one of the thread's blocks swapped into one of TRANSFER shared
//              slots; what was there (allocated by any thread, maybe one
//              that is gone) becomes this thread's, checked.
// A retiring thread puts half of its blocks into transfer slots (freeing what
// it takes out) and frees the rest: its cache is handed back while the blocks
// it allocated live on in other threads.
//
// At the end the slots are emptied and then: allocated and requested bytes
// and active blocks are 0, allocations == frees, the pool's created bytes are
// acquired + cached, the address space hands out nothing, and after the
// context's teardown the backend holds nothing (bytes lost: 0).
// Exit status 0 when every check held, 1 otherwise, 2 for bad usage. With
// --json one JSON object on stdout (the report goes to stderr).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/base/units.hpp"
#include "allocator/vm/device_context.hpp"
#include "tests/common/test_device.hpp"
#include "vmmalloc/allocator.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using vmm::KiB;
using vmm::MiB;

struct Options {
  unsigned slots = 8;
  std::uint64_t operations = 1000000;
  std::uint64_t per_thread = 4000;
  std::size_t transfer = 1024;
  unsigned streams = 2;
  std::uint64_t seed = 1;
  bool json = false;
};

std::uint64_t cookie(const void* p) {
  return (reinterpret_cast<std::uintptr_t>(p) * 0x9E3779B97F4A7C15ull) ^ 0x5bd1e995u;
}

struct Shared {
  const Options& o;
  vmm::Allocator& a;
  const std::vector<vmm::Stream>& streams;
  std::vector<std::atomic<void*>> transfer;
  std::atomic<std::uint64_t> started{0};  // operations handed to threads
  std::atomic<std::uint64_t> done{0};
  std::atomic<std::uint64_t> threads{0};
  std::atomic<std::uint64_t> transfers{0};
  std::atomic<std::uint64_t> corrupt{0};
  std::atomic<std::uint64_t> errors{0};
  std::mutex mutex;
  std::string first_error;  // guarded by mutex

  Shared(const Options& opt, vmm::Allocator& alloc, const std::vector<vmm::Stream>& s)
      : o(opt), a(alloc), streams(s), transfer(opt.transfer) {}
  void error(const std::string& what) {
    ++errors;
    std::lock_guard lock(mutex);
    if (first_error.empty()) first_error = what;
  }
};

// One short-lived thread's work.
class Worker {
 public:
  Worker(Shared& sh, std::uint64_t seed, std::uint64_t ops) : sh_(sh), rng_(seed), ops_(ops) {}

  void run() {
    try {
      for (std::uint64_t i = 0; i < ops_; ++i) step();
      retire();
    } catch (const std::exception& e) {
      sh_.error(e.what());
      for (void* p : mine_) free_checked(p);  // leave nothing behind
    }
    sh_.done += ops_;
  }

 private:
  static constexpr std::size_t kMaxMine = 64;
  static constexpr std::size_t kMinBlock = 17;  // the 16-byte header, then the last byte

  std::size_t random_size() {
    const unsigned r = static_cast<unsigned>(rng_() % 256);
    const std::size_t top = r == 0 ? 8 * MiB : r % 16 == 0 ? 1 * MiB : 16 * KiB;
    return kMinBlock + rng_() % (top - kMinBlock + 1);
  }

  void allocate() {
    const std::size_t n = random_size();
    const vmm::Stream s = sh_.streams[rng_() % sh_.streams.size()];
    auto* p = static_cast<unsigned char*>(sh_.a.allocate(n, s));
    const std::uint64_t header[2] = {n, cookie(p)};
    std::memcpy(p, header, sizeof header);
    p[n - 1] = static_cast<unsigned char>(header[1]);
    mine_.push_back(p);
  }

  // Checks a block's marks (another allocation overlapping it, or reuse
  // before its free, would have overwritten them), then frees it.
  void free_checked(void* ptr) {
    auto* p = static_cast<unsigned char*>(ptr);
    std::uint64_t header[2];
    std::memcpy(header, p, sizeof header);
    if (header[1] != cookie(p) || header[0] < kMinBlock || header[0] > 8 * MiB ||
        p[header[0] - 1] != static_cast<unsigned char>(header[1])) {
      ++sh_.corrupt;
    }
    sh_.a.deallocate(p);
  }

  void take_one(std::size_t k) {
    void* p = mine_[k];
    mine_[k] = mine_.back();
    mine_.pop_back();
    free_checked(p);
  }

  void swap_into_slot(void* p) {
    void* old = sh_.transfer[rng_() % sh_.transfer.size()].exchange(p);
    ++sh_.transfers;
    if (old != nullptr) mine_.push_back(old);
  }

  void step() {
    const unsigned roll = static_cast<unsigned>(rng_() % 100);
    if (mine_.empty() || (roll < 50 && mine_.size() < kMaxMine)) return allocate();
    const std::size_t k = rng_() % mine_.size();
    if (roll < 85) return take_one(k);
    void* p = mine_[k];
    mine_[k] = mine_.back();
    mine_.pop_back();
    swap_into_slot(p);
  }

  void retire() {
    // Half of what it holds outlives it in the slots; what comes out is freed.
    const std::size_t keep = mine_.size() / 2;
    std::vector<void*> leaving(mine_.begin(), mine_.begin() + static_cast<std::ptrdiff_t>(keep));
    mine_.erase(mine_.begin(), mine_.begin() + static_cast<std::ptrdiff_t>(keep));
    for (void* p : leaving) swap_into_slot(p);
    while (!mine_.empty()) take_one(mine_.size() - 1);
  }

  Shared& sh_;
  std::mt19937_64 rng_;
  std::uint64_t ops_;
  std::vector<void*> mine_;
};

// Keeps one slot busy: a thread of per_thread operations after another.
void slot(Shared& sh, unsigned index) {
  for (std::uint64_t generation = 0;; ++generation) {
    const std::uint64_t ops = sh.o.per_thread;
    if (sh.started.fetch_add(ops) >= sh.o.operations) return;
    ++sh.threads;
    std::thread t([&sh, index, generation, ops] {
      Worker(sh, sh.o.seed * 1000003u + index * 7919u + generation, ops).run();
    });
    t.join();
  }
}

struct Result {
  double seconds = 0;
  std::vector<std::string> accounting_errors;
  vmm::LiveObjects left;
};

std::uint64_t bytes_lost(const Result& r) {
  return r.left.handle_bytes + r.left.mapped_bytes + r.left.reserved_bytes;
}

// The checks at rest, with the allocator still alive.
void check_at_rest(vmm::Allocator& a, vmm::DeviceContext& ctx, const vmm::Backend& inner,
                   Result& r) {
  auto expect = [&](bool ok, const std::string& what) {
    if (!ok) r.accounting_errors.push_back(what);
  };
  const vmm::AllocatorStats s = a.stats();
  expect(s.allocated_bytes == 0 && s.requested_bytes == 0 && s.active_blocks == 0,
         "after every free: " + std::to_string(s.allocated_bytes) + " bytes allocated, " +
             std::to_string(s.requested_bytes) + " requested, " + std::to_string(s.active_blocks) +
             " blocks active");
  expect(s.allocations == s.frees,
         std::to_string(s.allocations) + " allocations but " + std::to_string(s.frees) + " frees");
  const vmm::Reclaimer::Accounting acc = ctx.reclaimer().accounting();
  expect(acc.pool.created_bytes == acc.pool.acquired_bytes + acc.pool.cached_bytes,
         "pool: created != acquired + cached");
  expect(acc.pool.acquired_bytes == s.mapped_bytes + acc.reclaimer.pending_bytes,
         "pool: acquired != mapped by the heap + pending reclaim");
  expect(inner.live_objects().handle_bytes == acc.pool.created_bytes,
         "backend handle bytes != pool created bytes");
}

Result run(const Options& o, Shared*& out) {
  std::unique_ptr<vmm::test::TestDevice> dev = vmm::test::make_host_test_device();
  std::unique_ptr<vmm::Backend> inner = dev->make_backend();
  vmm::Config config;
  config.va_reservation_size = 8 * vmm::GiB;
  config.pool_cache_limit = 64 * MiB;
  auto ctx = std::make_unique<vmm::DeviceContext>(
      std::make_unique<vmm::FaultInjectingBackend>(*inner), config);  // never armed
  std::vector<vmm::Stream> streams;
  for (unsigned i = 0; i < o.streams; ++i) streams.push_back(dev->create_stream());
  Result r;
  {
    vmm::Allocator a(*ctx);
    auto sh = std::make_unique<Shared>(o, a, streams);
    const auto start = Clock::now();
    std::vector<std::thread> slots;
    for (unsigned i = 0; i < o.slots; ++i) slots.emplace_back(slot, std::ref(*sh), i);
    for (std::thread& t : slots) t.join();
    r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    for (auto& t : sh->transfer) {
      void* p = t.exchange(nullptr);
      if (p != nullptr) a.deallocate(p);
    }
    check_at_rest(a, *ctx, *inner, r);
    for (vmm::Stream s : streams) a.release_stream(s);
    a.empty_cache();
    ctx->reclaimer().drain();
    out = sh.release();  // its counters outlive the allocator
  }
  ctx->reclaimer().drain();
  if (ctx->address_space().stats().allocated_bytes != 0) {
    r.accounting_errors.push_back("address ranges still handed out");
  }
  ctx.reset();
  r.left = inner->live_objects();
  for (vmm::Stream s : streams) dev->destroy_stream(s);
  return r;
}

std::uint64_t parse_count(const std::string& name, const char* text, std::uint64_t low) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (end == text || *end != '\0' || text[0] == '-' || v < low) {
    throw std::invalid_argument(name + ": '" + text +
                                "' is not an integer >= " + std::to_string(low));
  }
  return v;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      o.json = true;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument("unknown or incomplete argument '" + arg + "'");
    const char* v = argv[++i];
    if (arg == "--slots") {
      o.slots = static_cast<unsigned>(std::min<std::uint64_t>(parse_count(arg, v, 1), 256));
    } else if (arg == "--operations") {
      o.operations = parse_count(arg, v, 1);
    } else if (arg == "--per-thread") {
      o.per_thread = parse_count(arg, v, 1);
    } else if (arg == "--transfer") {
      o.transfer = parse_count(arg, v, 1);
    } else if (arg == "--streams") {
      o.streams = static_cast<unsigned>(std::min<std::uint64_t>(parse_count(arg, v, 1), 64));
    } else if (arg == "--seed") {
      o.seed = parse_count(arg, v, 0);
    } else {
      throw std::invalid_argument("unknown argument '" + arg + "'");
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse_options(argc, argv);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr,
                 "vmm_churn: %s\nusage: vmm_churn [--slots N] [--operations N] [--per-thread N] "
                 "[--transfer N] [--streams N] [--seed N] [--json]\n",
                 e.what());
    return 2;
  }
  Shared* sh = nullptr;
  Result r;
  try {
    r = run(o, sh);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmm_churn: %s\n", e.what());
    return 1;
  }
  std::unique_ptr<Shared> owned(sh);
  std::FILE* report = o.json ? stderr : stdout;
  std::fprintf(report,
               "vmm_churn: %" PRIu64 " operations by %" PRIu64 " threads (%u at a time, %" PRIu64
               " each), %" PRIu64 " transfers, in %.2f s; %" PRIu64 " corrupt blocks, %" PRIu64
               " errors%s%s; bytes lost %" PRIu64 "\n",
               sh->done.load(), sh->threads.load(), o.slots, o.per_thread, sh->transfers.load(),
               r.seconds, sh->corrupt.load(), sh->errors.load(),
               sh->first_error.empty() ? "" : ", first: ", sh->first_error.c_str(), bytes_lost(r));
  for (const std::string& e : r.accounting_errors)
    std::fprintf(report, "  ACCOUNTING: %s\n", e.c_str());
  if (o.json) {
    std::printf(
        "{\"tool\": \"vmm_churn\", \"backend\": \"host\", \"slots\": %u, \"threads\": %" PRIu64
        ", \"operations\": %" PRIu64 ", \"transfers\": %" PRIu64 ", \"corrupt\": %" PRIu64
        ", \"errors\": %" PRIu64 ", \"accounting_errors\": %zu, \"bytes_lost\": %" PRIu64
        ", \"seconds\": %.3f}\n",
        o.slots, sh->threads.load(), sh->done.load(), sh->transfers.load(), sh->corrupt.load(),
        sh->errors.load(), r.accounting_errors.size(), bytes_lost(r), r.seconds);
  }
  const bool ok = sh->corrupt.load() == 0 && sh->errors.load() == 0 &&
                  r.accounting_errors.empty() && bytes_lost(r) == 0;
  std::fprintf(report, "vmm_churn: %s\n", ok ? "PASSED" : "FAILED");
  return ok ? 0 : 1;
}
