// vmm_stress: many threads hammer one device's allocator and workspaces with
// random operations, every byte handed out filled and verified, and at the
// end nothing may be lost.
//
//   vmm_stress [--backend host|cuda] [--threads N] [--streams N]
//              [--iterations N] [--seconds S] [--seed N] [--max-block SIZE]
//              [--workspace SIZE] [--memory-cap SIZE] [--json]
//
// Each of THREADS threads runs ITERATIONS random operations (or until
// --seconds have passed: the time bound) over STREAMS shared streams:
//
//   allocate        a block of 1 byte .. --max-block (log-uniform) on a random
//                   stream, filled with the thread's next pattern there
//   free            the block is verified on its stream, then freed in its
//                   stream's order - or, one time in four, in another
//                   stream's order (deallocate(ptr, stream))
//   record_stream   the block is read (verified) on a second stream too, then
//                   record_stream'd there: it must not be reused before that
//                   read is done
//   grow / shrink   the thread's workspace (capacity --workspace) grows in
//                   place (old bytes verified, new bytes filled) or shrinks
//                   (kept bytes verified first) on the thread's stream
//   empty_cache / trim_to_limit, now and then
//
// Fill and verify run on the device the way the test suites do it
// (tests/common/test_device.hpp): kernels on the block's stream on a GPU,
// memset/compare on the host backend's host streams. A byte that differs
// from its block's pattern when verified - another allocation overlapping a
// live block, memory reused before a stream finished with it, a chunk
// unmapped or remapped too early - counts as a mismatch.
//
// Out of memory (a --memory-cap, or a full device) is an allowed outcome of an
// allocate or grow, counted and reported; any other error fails the run.
//
// At the end every block is freed, the workspaces released, the streams
// released (Allocator::release_stream), and the accounting is checked
// (allocator: nothing allocated; pool: created = acquired + cached; address
// space: no range handed out); then the allocator's context is torn down and
// the backend's own count of what it still holds - physical handles,
// mappings, VA reservations - is the "bytes lost", which must be 0.
//
// Output: a text report on stdout (stderr with --json), and with --json one
// JSON object on stdout (what bench/reliability.py reads).
// Exit status: 0 when nothing mismatched, nothing was lost and no operation
// failed unexpectedly; 1 otherwise; 2 for bad usage; 77 when --backend cuda
// has no usable GPU (CTest: skipped).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
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
#include "allocator/vm/device_context.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/test_device.hpp"
#include "tools/cli.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/workspace.hpp"

namespace {

using vmm::MiB;
using Clock = std::chrono::steady_clock;

struct UsageError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct Options {
  std::string backend = "host";
  unsigned threads = 4;
  unsigned streams = 3;
  std::uint64_t iterations = 2000;  // per thread
  double seconds = 0;               // 0: no time bound
  std::uint64_t seed = 1;
  std::size_t max_block = 4 * MiB;
  std::size_t workspace = 64 * MiB;
  std::size_t memory_cap = 0;
  bool json = false;
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: vmm_stress [--backend host|cuda] [--threads N] [--streams N]\n"
               "                  [--iterations N] [--seconds S] [--seed N] [--max-block SIZE]\n"
               "                  [--workspace SIZE] [--memory-cap SIZE] [--json]\n"
               "  --iterations  operations per thread (default 2000)\n"
               "  --seconds     time bound: stop early once it has passed (default: none)\n"
               "  sizes take K, M, G suffixes (\"8M\")\n");
}

std::uint64_t parse_count(const std::string& name, const std::string& text, std::uint64_t low,
                          std::uint64_t high) {
  std::uint64_t v = 0;
  std::size_t used = 0;
  try {
    v = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || text[0] == '-' || v < low || v > high) {
    throw UsageError(name + ": '" + text + "' is not an integer from " + std::to_string(low) +
                     " to " + std::to_string(high));
  }
  return v;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(arg + " needs a value");
      return argv[++i];
    };
    auto size = [&](const std::string& name) {
      try {
        return vmm::cli::parse_size(value());
      } catch (const std::invalid_argument& e) {
        throw UsageError(name + ": " + e.what());
      }
    };
    if (arg == "--backend") {
      o.backend = value();
      if (o.backend != "host" && o.backend != "cuda") {
        throw UsageError("--backend: '" + o.backend + "' (valid: host, cuda)");
      }
    } else if (arg == "--threads") {
      o.threads = static_cast<unsigned>(parse_count(arg, value(), 1, 256));
    } else if (arg == "--streams") {
      o.streams = static_cast<unsigned>(parse_count(arg, value(), 1, 64));
    } else if (arg == "--iterations") {
      o.iterations = parse_count(arg, value(), 1, std::uint64_t{1} << 40);
    } else if (arg == "--seconds") {
      o.seconds = static_cast<double>(parse_count(arg, value(), 0, 86400));
    } else if (arg == "--seed") {
      o.seed = parse_count(arg, value(), 0, UINT64_MAX);
    } else if (arg == "--max-block") {
      o.max_block = size(arg);
      if (o.max_block == 0) throw UsageError("--max-block: must be at least 1 byte");
    } else if (arg == "--workspace") {
      o.workspace = size(arg);
      if (o.workspace < 2 * MiB) throw UsageError("--workspace: must be at least 2M");
    } else if (arg == "--memory-cap") {
      o.memory_cap = size(arg);
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--help" || arg == "-h") {
      usage(stdout);
      std::exit(0);
    } else {
      throw UsageError("unknown argument '" + arg + "'");
    }
  }
  return o;
}

enum Op { kAllocate, kFree, kFreeOnOtherStream, kRecordStream, kGrow, kShrink, kEmptyCache, kTrim, kOps };
const char* const kOpNames[kOps] = {"allocate", "free",  "free_other_stream", "record_stream",
                                    "grow",     "shrink", "empty_cache",       "trim_to_limit"};

struct Counters {
  std::atomic<std::uint64_t> ops[kOps] = {};
  std::atomic<std::uint64_t> ooms{0};
  std::atomic<std::uint64_t> bytes_filled{0};
  std::atomic<std::uint64_t> bytes_verified{0};
  std::atomic<std::uint64_t> errors{0};
  std::mutex mutex;
  std::string first_error;  // guarded by mutex

  std::uint64_t operations() const {
    std::uint64_t n = 0;
    for (const auto& c : ops) n += c.load();
    return n;
  }
  void error(const std::string& what) {
    ++errors;
    std::lock_guard lock(mutex);
    if (first_error.empty()) first_error = what;
  }
};

struct Block {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  std::uint8_t value = 0;
  vmm::Stream stream = nullptr;
};

// One thread's random walk. Everything it fills it later verifies.
class Worker {
 public:
  Worker(unsigned id, const Options& o, vmm::test::TestDevice& dev, vmm::Allocator& a,
         vmm::DeviceContext& ctx, const std::vector<vmm::Stream>& streams, Counters& counters,
         Clock::time_point deadline)
      : id_(id), o_(o), dev_(dev), a_(a), ctx_(ctx), streams_(streams), c_(counters),
        deadline_(deadline), rng_(o.seed * 1000003u + id), ws_stream_(streams[id % streams.size()]) {}

  void run() {
    try {
      ws_ = std::make_unique<vmm::Workspace>(ctx_, o_.workspace);
      ws_value_ = next_value();
      for (std::uint64_t i = 0; i < o_.iterations; ++i) {
        if (o_.seconds > 0 && (i & 15) == 0 && Clock::now() >= deadline_) break;
        step();
      }
      finish();
    } catch (const std::exception& e) {
      c_.error("thread " + std::to_string(id_) + ": " + e.what());
      // Leave nothing behind even after a failure, so the leak check still
      // means something.
      try {
        finish();
      } catch (const std::exception& e2) {
        c_.error("thread " + std::to_string(id_) + " cleanup: " + e2.what());
      }
    }
  }

 private:
  static constexpr std::size_t kMaxLiveBlocks = 24;

  void step() {
    const unsigned roll = static_cast<unsigned>(rng_() % 100);
    if (roll < 42) {
      if (blocks_.size() >= kMaxLiveBlocks) return free_block(false);
      return allocate();
    }
    if (roll < 67) return free_block(false);
    if (roll < 75) return free_block(true);
    if (roll < 83) return record_stream();
    if (roll < 91) return grow();
    if (roll < 98) return shrink();
    if (roll < 99) {
      a_.empty_cache();
      ++c_.ops[kEmptyCache];
      return;
    }
    a_.trim_to_limit();
    ++c_.ops[kTrim];
  }

  std::uint8_t next_value() {
    value_ = static_cast<std::uint8_t>(value_ % 251 + 1);
    return value_;
  }
  vmm::Stream random_stream() { return streams_[rng_() % streams_.size()]; }

  // Log-uniform in [1, max_block]: as many tiny blocks as huge ones.
  std::size_t random_size() {
    const double top = std::log2(static_cast<double>(o_.max_block));
    const double e = std::uniform_real_distribution<double>(0.0, top)(rng_);
    const auto n = static_cast<std::size_t>(std::exp2(e));
    return std::clamp<std::size_t>(n, 1, o_.max_block);
  }

  void fill(vmm::Stream s, void* p, std::size_t n, std::uint8_t v) {
    if (n == 0) return;
    dev_.fill(s, p, n, v);
    c_.bytes_filled += n;
  }
  void verify(vmm::Stream s, const void* p, std::size_t n, std::uint8_t v) {
    if (n == 0) return;
    dev_.verify(s, p, n, v);
    c_.bytes_verified += n;
  }

  void allocate() {
    const std::size_t n = random_size();
    const vmm::Stream s = random_stream();
    void* p = nullptr;
    try {
      p = a_.allocate(n, s);
    } catch (const vmm::OutOfMemoryError&) {
      ++c_.ooms;
      ++c_.ops[kAllocate];
      return;
    }
    const std::uint8_t v = next_value();
    fill(s, p, n, v);
    blocks_.push_back({p, n, v, s});
    ++c_.ops[kAllocate];
  }

  void free_block(bool on_other_stream) {
    if (blocks_.empty()) return allocate();
    const std::size_t k = rng_() % blocks_.size();
    const Block b = blocks_[k];
    blocks_[k] = blocks_.back();
    blocks_.pop_back();
    verify(b.stream, b.ptr, b.bytes, b.value);
    if (on_other_stream) {
      a_.deallocate(b.ptr, random_stream());
      ++c_.ops[kFreeOnOtherStream];
    } else {
      a_.deallocate(b.ptr);
      ++c_.ops[kFree];
    }
  }

  // The block is read on a second stream after its fill completed, and
  // record_stream tells the allocator so.
  void record_stream() {
    if (blocks_.empty()) return allocate();
    const Block& b = blocks_[rng_() % blocks_.size()];
    const vmm::Stream other = random_stream();
    if (other != b.stream) dev_.synchronize(b.stream);  // the fill is done
    verify(other, b.ptr, b.bytes, b.value);
    a_.record_stream(b.ptr, other);
    ++c_.ops[kRecordStream];
  }

  void grow() {
    const std::size_t old = ws_->size();
    const std::size_t n = std::min(ws_->capacity(), old + 1 + rng_() % (o_.workspace / 2));
    try {
      ws_->grow_to(n);
    } catch (const vmm::OutOfMemoryError&) {
      ++c_.ooms;
      ++c_.ops[kGrow];
      if (ws_->size() != old) throw std::runtime_error("a failed grow changed the workspace's size");
      return;
    }
    auto* base = static_cast<unsigned char*>(ws_->data());
    verify(ws_stream_, base, old, ws_value_);  // kept in place
    fill(ws_stream_, base + old, ws_->size() - old, ws_value_);
    ++c_.ops[kGrow];
  }

  void shrink() {
    const std::size_t size = ws_->size();
    const std::size_t n = size == 0 ? 0 : rng_() % size;
    verify(ws_stream_, ws_->data(), n, ws_value_);
    ws_->shrink_to(n, ws_stream_);
    ++c_.ops[kShrink];
  }

  void finish() {
    for (const Block& b : blocks_) {
      verify(b.stream, b.ptr, b.bytes, b.value);
      a_.deallocate(b.ptr);
    }
    blocks_.clear();
    if (ws_) {
      verify(ws_stream_, ws_->data(), ws_->size(), ws_value_);
      ws_->release(ws_stream_);
      ws_.reset();
    }
  }

  unsigned id_;
  const Options& o_;
  vmm::test::TestDevice& dev_;
  vmm::Allocator& a_;
  vmm::DeviceContext& ctx_;
  const std::vector<vmm::Stream>& streams_;
  Counters& c_;
  Clock::time_point deadline_;
  std::mt19937_64 rng_;
  vmm::Stream ws_stream_;
  std::vector<Block> blocks_;
  std::unique_ptr<vmm::Workspace> ws_;
  std::uint8_t ws_value_ = 0;
  std::uint8_t value_ = 0;
};

struct Result {
  std::uint64_t mismatches = 0;
  vmm::LiveObjects left;          // on the backend after the teardown
  std::vector<std::string> accounting_errors;
  std::uint64_t driver_calls[vmm::kBackendCallKinds] = {};
  std::size_t peak_created_bytes = 0;
  double seconds = 0;
  bool time_bound_hit = false;
};

std::unique_ptr<vmm::test::TestDevice> make_device(const std::string& backend) {
  if (backend == "host") return vmm::test::make_host_test_device();
#ifdef VMM_TEST_HAVE_CUDA
  return vmm::test::make_cuda_test_device();
#else
  throw UsageError("--backend cuda: this vmm_stress was built without the CUDA compiler");
#endif
}

Result run(const Options& o, Counters& c) {
  std::unique_ptr<vmm::test::TestDevice> dev = make_device(o.backend);
  std::unique_ptr<vmm::Backend> inner = dev->make_backend();
  auto counting = std::make_unique<vmm::FaultInjectingBackend>(*inner);  // never armed: counts
  vmm::FaultInjectingBackend* calls = counting.get();
  vmm::Config config;
  config.memory_cap_bytes = o.memory_cap;
  config.pool_cache_limit = 64 * MiB;  // small: trims and releases happen
  config.va_reservation_size = 8 * vmm::GiB;
  auto ctx = std::make_unique<vmm::DeviceContext>(std::move(counting), config);

  std::vector<vmm::Stream> streams;
  for (unsigned i = 0; i < o.streams; ++i) streams.push_back(dev->create_stream());

  Result r;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(o.seconds));
  {
    vmm::Allocator a(*ctx);
    std::vector<std::unique_ptr<Worker>> workers;
    for (unsigned t = 0; t < o.threads; ++t) {
      workers.push_back(std::make_unique<Worker>(t, o, *dev, a, *ctx, streams, c, deadline));
    }
    std::vector<std::thread> threads;
    for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
    for (auto& t : threads) t.join();
    r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    r.time_bound_hit = o.seconds > 0 && Clock::now() >= deadline;

    // Mismatch counters are read only now, by this thread alone: reading one
    // resets it, which would race with other threads' verifies.
    for (vmm::Stream s : streams) r.mismatches += dev->mismatches(s);
    for (vmm::Stream s : streams) a.release_stream(s);
    a.empty_cache();
    ctx->reclaimer().drain();

    const vmm::AllocatorStats s = a.stats();
    auto expect = [&](bool ok, const std::string& what) {
      if (!ok) r.accounting_errors.push_back(what);
    };
    expect(s.allocated_bytes == 0 && s.active_blocks == 0,
           "allocator still reports " + std::to_string(s.allocated_bytes) + " bytes in " +
               std::to_string(s.active_blocks) + " blocks after every block was freed");
    const vmm::Reclaimer::Accounting acc = ctx->reclaimer().accounting();
    expect(acc.pool.created_bytes == acc.pool.acquired_bytes + acc.pool.cached_bytes,
           "pool: created != acquired + cached");
    expect(acc.pool.acquired_bytes == s.mapped_bytes + acc.reclaimer.pending_bytes,
           "pool: acquired != mapped by the heap + pending reclaim (workspaces are released)");
    expect(inner->live_objects().handle_bytes == acc.pool.created_bytes,
           "backend handle bytes != pool created bytes");
    r.peak_created_bytes = acc.pool.peak_created_bytes;
  }
  // The allocator returned everything: nothing handed out may remain.
  ctx->reclaimer().drain();
  const std::size_t ranges = ctx->address_space().stats().allocated_bytes;
  if (ranges != 0) {
    r.accounting_errors.push_back(std::to_string(ranges) +
                                  " bytes of address ranges still handed out");
  }
  if (ctx->pool().stats().acquired_bytes != 0) {
    r.accounting_errors.push_back("pool: chunks still acquired");
  }
  for (int k = 0; k < vmm::kBackendCallKinds; ++k) {
    r.driver_calls[k] = calls->calls(static_cast<vmm::BackendCall>(k));
  }
  ctx.reset();
  r.left = inner->live_objects();
  for (vmm::Stream s : streams) dev->destroy_stream(s);
  return r;
}

std::uint64_t bytes_lost(const Result& r) {
  return r.left.handle_bytes + r.left.mapped_bytes + r.left.reserved_bytes;
}

void print_report(std::FILE* out, const Options& o, const Counters& c, const Result& r) {
  std::fprintf(out, "vmm_stress: backend %s, %u threads, %u streams, %" PRIu64
                    " iterations per thread%s, seed %" PRIu64 "\n",
               o.backend.c_str(), o.threads, o.streams, o.iterations,
               o.seconds > 0 ? (", bound " + std::to_string(static_cast<int>(o.seconds)) + " s").c_str()
                             : "",
               o.seed);
  std::fprintf(out, "  operations %" PRIu64 " in %.2f s%s:", c.operations(), r.seconds,
               r.time_bound_hit ? " (stopped by the time bound)" : "");
  for (int k = 0; k < kOps; ++k) std::fprintf(out, " %s %" PRIu64, kOpNames[k], c.ops[k].load());
  std::fprintf(out, "\n  out of memory (allowed): %" PRIu64 "\n", c.ooms.load());
  std::fprintf(out, "  bytes filled %" PRIu64 ", verified %" PRIu64 ", mismatched %" PRIu64 "\n",
               c.bytes_filled.load(), c.bytes_verified.load(), r.mismatches);
  std::fprintf(out, "  driver calls:");
  for (int k = 0; k < vmm::kBackendCallKinds; ++k) {
    if (r.driver_calls[k] != 0) {
      std::fprintf(out, " %s %" PRIu64, vmm::backend_call_name(static_cast<vmm::BackendCall>(k)),
                   r.driver_calls[k]);
    }
  }
  std::fprintf(out, "\n  peak physical memory %s\n", vmm::format_bytes(r.peak_created_bytes).c_str());
  for (const std::string& e : r.accounting_errors) std::fprintf(out, "  ACCOUNTING: %s\n", e.c_str());
  if (c.errors.load() != 0) {
    std::fprintf(out, "  ERRORS: %" PRIu64 ", first: %s\n", c.errors.load(), c.first_error.c_str());
  }
  std::fprintf(out,
               "  bytes lost %" PRIu64 " (left on the backend after teardown: %zu handles of %zu "
               "bytes, %zu bytes mapped, %zu reservations of %zu bytes)\n",
               bytes_lost(r), r.left.handles, r.left.handle_bytes, r.left.mapped_bytes,
               r.left.reservations, r.left.reserved_bytes);
}

void print_json(const Options& o, const Counters& c, const Result& r) {
  std::printf("{\"tool\": \"vmm_stress\", \"backend\": \"%s\", \"threads\": %u, \"streams\": %u, "
              "\"iterations\": %" PRIu64 ", \"seconds_bound\": %.0f, \"seed\": %" PRIu64
              ", \"operations\": %" PRIu64 ", \"ooms\": %" PRIu64 ", \"errors\": %" PRIu64
              ", \"bytes_filled\": %" PRIu64 ", \"bytes_verified\": %" PRIu64
              ", \"mismatched_bytes\": %" PRIu64 ", \"bytes_lost\": %" PRIu64
              ", \"accounting_errors\": %zu, \"seconds\": %.3f}\n",
              o.backend.c_str(), o.threads, o.streams, o.iterations, o.seconds, o.seed,
              c.operations(), c.ooms.load(), c.errors.load(), c.bytes_filled.load(),
              c.bytes_verified.load(), r.mismatches, bytes_lost(r), r.accounting_errors.size(),
              r.seconds);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse_options(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "vmm_stress: %s\n", e.what());
    usage(stderr);
    return 2;
  }
  if (o.backend == "cuda") {
    std::string why;
    if (!vmm::test::gpu_available(&why)) {
      std::printf("SKIPPED: no usable GPU (%s)\n", why.c_str());
      return vmm::test::kSkipReturnCode;
    }
  }
  std::FILE* report = o.json ? stderr : stdout;
  Counters c;
  Result r;
  try {
    r = run(o, c);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "vmm_stress: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmm_stress: %s\n", e.what());
    return 1;
  }
  print_report(report, o, c, r);
  if (o.json) print_json(o, c, r);
  const bool ok = r.mismatches == 0 && bytes_lost(r) == 0 && r.accounting_errors.empty() &&
                  c.errors.load() == 0;
  std::fprintf(report, "vmm_stress: %s\n", ok ? "PASSED" : "FAILED");
  return ok ? 0 : 1;
}
