// The measuring loop and the rows of the results file shared by
// bench/alloc_latency (vmmalloc, cudaMalloc, cudaMallocAsync; static CUDA
// runtime) and bench/alloc_latency_torch (PyTorch's caching allocator; built
// against the installed torch). Header-only, C++20 standard library plus
// tools/cli.hpp (size arguments in the library's grammar,
// allocator/base/units.cpp) and bench/results_writer.hpp (the file's
// envelope), so both programs measure exactly the same way whatever runtime
// they link.
//
// One cell = one system, one size, N threads. Each thread:
//   1. set-up (its stream: thread i always uses stream i of a fixed set, so
//      every cell and system sees the same streams);
//   2. warm-up: allocate(size)+free pairs for at least `warmup_ms` and at least
//      `warmup_min_pairs` pairs, so the measured pairs are cache hits;
//   3. calibration: pairs in batches of 1, 2, 4, ... until one batch takes at
//      least `batch_us`; that batch length is kept;
//   4. all threads meet (a barrier; the main thread runs its begin hook there,
//      e.g. a driver-call counter snapshot), then run timed batches until the
//      common deadline (`window_ms` after the start) and at least
//      `min_batches` batches.
// Reported: the median over every batch of every thread of (batch time /
// pairs in the batch), and the total pairs of all threads divided by the time
// from the common start to the end of the last thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "results_writer.hpp"
#include "tools/cli.hpp"

namespace alloc_latency {

using Clock = std::chrono::steady_clock;

struct Timing {
  double warmup_ms = 20.0;
  std::uint64_t warmup_min_pairs = 16;
  double batch_us = 100.0;
  double window_ms = 300.0;
  std::uint64_t min_batches = 5;
};

struct Cell {
  double ns_per_pair_median = 0;
  double ns_per_pair_p10 = 0;
  double ns_per_pair_p90 = 0;
  double pairs_per_s_total = 0;
  std::uint64_t pairs = 0;       // measured pairs, all threads
  std::uint64_t batches = 0;     // measured batches, all threads
  double window_s = 0;           // common start to the end of the last thread
  std::uint64_t warmup_pairs = 0;
};

inline double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const auto hi = static_cast<std::size_t>(std::ceil(pos));
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

// Sys provides:
//   typename Sys::Thread;                         per-thread state
//   Sys::Thread thread_setup(int index);          on the worker thread
//   void* alloc(Sys::Thread&, std::size_t bytes); throws on failure
//   void release(Sys::Thread&, void* p);          throws on failure
// `begin` runs on the main thread once every worker has warmed up and
// calibrated, right before the timed batches start; `end` once all joined.
template <class Sys, class Begin, class End>
Cell measure(Sys& sys, std::size_t bytes, int threads, const Timing& t, Begin&& begin, End&& end) {
  if (threads < 1) throw std::invalid_argument("threads must be >= 1");
  const auto n = static_cast<std::size_t>(threads);
  std::barrier ready(static_cast<std::ptrdiff_t>(n + 1));
  std::barrier go(static_cast<std::ptrdiff_t>(n + 1));
  std::vector<std::vector<double>> batch_ns(n);
  std::vector<std::uint64_t> pairs(n, 0), warm(n, 0);
  std::vector<Clock::time_point> ends(n);
  std::vector<std::exception_ptr> errors(n);
  Clock::time_point start{};
  Clock::time_point deadline{};

  const auto warmup = std::chrono::duration<double, std::milli>(t.warmup_ms);
  const double target_batch_ns = t.batch_us * 1e3;

  auto worker = [&](std::size_t i) {
    std::optional<typename Sys::Thread> th;
    std::uint64_t batch = 1;
    try {
      th.emplace(sys.thread_setup(static_cast<int>(i)));
      const auto w0 = Clock::now();
      std::uint64_t w = 0;
      while (w < t.warmup_min_pairs || Clock::now() - w0 < warmup) {
        sys.release(*th, sys.alloc(*th, bytes));
        ++w;
      }
      for (;;) {
        const auto c0 = Clock::now();
        for (std::uint64_t k = 0; k < batch; ++k) sys.release(*th, sys.alloc(*th, bytes));
        const double ns = std::chrono::duration<double, std::nano>(Clock::now() - c0).count();
        w += batch;
        if (ns >= target_batch_ns || batch >= (std::uint64_t{1} << 24)) break;
        batch *= 2;
      }
      warm[i] = w;
    } catch (...) {
      errors[i] = std::current_exception();
    }
    ready.arrive_and_wait();
    go.arrive_and_wait();  // start and deadline are set before this completes
    if (errors[i]) return;
    try {
      auto& out = batch_ns[i];
      std::uint64_t done = 0;
      std::uint64_t nb = 0;
      for (;;) {
        const auto b0 = Clock::now();
        for (std::uint64_t k = 0; k < batch; ++k) sys.release(*th, sys.alloc(*th, bytes));
        const auto b1 = Clock::now();
        out.push_back(std::chrono::duration<double, std::nano>(b1 - b0).count() /
                      static_cast<double>(batch));
        done += batch;
        ++nb;
        if (b1 >= deadline && nb >= t.min_batches) break;
      }
      pairs[i] = done;
      ends[i] = Clock::now();
    } catch (...) {
      errors[i] = std::current_exception();
      ends[i] = Clock::now();
    }
  };

  std::vector<std::thread> pool;
  pool.reserve(n);
  for (std::size_t i = 0; i < n; ++i) pool.emplace_back(worker, i);
  ready.arrive_and_wait();
  std::exception_ptr hook_error;
  try {
    begin();
  } catch (...) {
    hook_error = std::current_exception();
  }
  start = Clock::now();
  deadline = start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double, std::milli>(t.window_ms));
  go.arrive_and_wait();
  for (auto& th : pool) th.join();
  end();
  if (hook_error) std::rethrow_exception(hook_error);
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }

  Cell c;
  std::vector<double> all;
  Clock::time_point last = start;
  for (std::size_t i = 0; i < n; ++i) {
    all.insert(all.end(), batch_ns[i].begin(), batch_ns[i].end());
    c.pairs += pairs[i];
    c.warmup_pairs += warm[i];
    last = std::max(last, ends[i]);
  }
  c.batches = all.size();
  c.ns_per_pair_median = quantile(all, 0.5);
  c.ns_per_pair_p10 = quantile(all, 0.1);
  c.ns_per_pair_p90 = quantile(all, 0.9);
  c.window_s = std::chrono::duration<double>(last - start).count();
  c.pairs_per_s_total = c.window_s > 0 ? static_cast<double>(c.pairs) / c.window_s : 0;
  return c;
}

template <class Sys>
Cell measure(Sys& sys, std::size_t bytes, int threads, const Timing& t) {
  return measure(sys, bytes, threads, t, [] {}, [] {});
}

// ------------------------------------------------------------------ rows

struct Row {
  std::string system;
  std::size_t size_bytes = 0;
  int threads = 0;
  double ns_per_pair_median = 0;
  double pairs_per_s_total = 0;
  std::optional<double> driver_calls_per_pair;  // vmmalloc rows only
};

// ------------------------------------------------------------- options

struct Common {
  std::vector<std::size_t> sizes;
  std::vector<int> threads;
  Timing timing;
  int device = 0;
  std::string out;
  std::string commit;
};

using vmm::cli::parse_size;
using vmm::cli::split;

inline const char* common_usage() {
  return "  --sizes 512,64K,1M,16M,256M   sizes (binary suffixes K M G)\n"
         "  --threads 1,8                 thread counts\n"
         "  --window-ms 300               timed window per cell\n"
         "  --warmup-ms 20                warm-up per thread and cell\n"
         "  --batch-us 100                target length of one timed batch\n"
         "  --device 0\n"
         "  --out FILE                    results file (format: docs/benchmarks.md)\n"
         "  --commit SHA                  recorded in the file (default $VMMALLOC_COMMIT)\n";
}

// Parses one common option at argv[i] (advancing i past its value); false if
// argv[i] is not one of them.
inline bool parse_common(Common& c, int argc, char** argv, int& i) {
  const std::string a = argv[i];
  auto value = [&]() -> std::string {
    if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
    return argv[++i];
  };
  if (a == "--sizes") {
    c.sizes.clear();
    for (const auto& s : split(value(), ',')) c.sizes.push_back(parse_size(s));
  } else if (a == "--threads") {
    c.threads.clear();
    for (const auto& s : split(value(), ',')) c.threads.push_back(std::stoi(s));
  } else if (a == "--window-ms") {
    c.timing.window_ms = std::stod(value());
  } else if (a == "--warmup-ms") {
    c.timing.warmup_ms = std::stod(value());
  } else if (a == "--batch-us") {
    c.timing.batch_us = std::stod(value());
  } else if (a == "--device") {
    c.device = std::stoi(value());
  } else if (a == "--out") {
    c.out = value();
  } else if (a == "--commit") {
    c.commit = value();
  } else {
    return false;
  }
  return true;
}

inline void set_common_defaults(Common& c, const std::string& out) {
  c.sizes = {512, std::size_t{64} << 10, std::size_t{1} << 20, std::size_t{16} << 20,
             std::size_t{256} << 20};
  c.threads = {1, 8};
  c.out = out;
  if (const char* env = std::getenv("VMMALLOC_COMMIT"); env != nullptr && *env != '\0') c.commit = env;
}

inline void validate_common(Common& c) {
  if (c.commit.empty()) c.commit = "unknown";
  if (c.sizes.empty()) throw std::invalid_argument("--sizes is empty");
  for (auto s : c.sizes) {
    if (s == 0) throw std::invalid_argument("sizes must be positive");
  }
  if (c.threads.empty()) throw std::invalid_argument("--threads is empty");
  for (int th : c.threads) {
    if (th < 1 || th > 256) throw std::invalid_argument("thread counts must be 1..256");
  }
  if (!(c.timing.window_ms > 0) || !(c.timing.warmup_ms >= 0) || !(c.timing.batch_us > 0)) {
    throw std::invalid_argument("--window-ms and --batch-us must be positive, --warmup-ms >= 0");
  }
}

inline int max_threads(const Common& c) { return *std::max_element(c.threads.begin(), c.threads.end()); }

// ------------------------------------------------------------ results

// The rows in the results file (bench/results_writer.hpp writes the
// envelope), one line each: ns to 0.1, pairs/s to 1, driver calls to 1e-6.
inline vmm::bench::Json rows_json(const std::vector<Row>& rows) {
  using vmm::bench::Json;
  using vmm::bench::rounded;
  Json out = Json::array();
  for (const Row& r : rows) {
    Json j;
    j["system"] = r.system;
    j["size_bytes"] = r.size_bytes;
    j["threads"] = r.threads;
    j["ns_per_pair_median"] = rounded(r.ns_per_pair_median, 1);
    j["pairs_per_s_total"] = rounded(r.pairs_per_s_total, 0);
    if (r.driver_calls_per_pair) j["driver_calls_per_pair"] = rounded(*r.driver_calls_per_pair, 6);
    out.push_back(std::move(j));
  }
  return out;
}

inline void write_results(const std::string& path, const vmm::bench::RunInfo& info,
                          const std::vector<Row>& rows) {
  vmm::bench::write_results(path, info, rows_json(rows), vmm::bench::RowLayout::kOneLinePerRow);
}

// ------------------------------------------------------------- stdout

inline std::string size_label(std::size_t b) {
  char buf[32];
  if (b >= (std::size_t{1} << 20) && b % (std::size_t{1} << 20) == 0) {
    std::snprintf(buf, sizeof buf, "%zu MiB", b >> 20);
  } else if (b >= 1024 && b % 1024 == 0) {
    std::snprintf(buf, sizeof buf, "%zu KiB", b >> 10);
  } else {
    std::snprintf(buf, sizeof buf, "%zu B", b);
  }
  return buf;
}

inline void print_header() {
  std::printf("%-16s %10s %4s %12s %12s %12s %14s %10s %8s\n", "system", "size", "thr", "ns/pair p50",
              "p10", "p90", "pairs/s total", "pairs", "batches");
}

inline void print_cell(const std::string& system, std::size_t bytes, int threads, const Cell& c,
                       const std::string& extra = {}) {
  std::printf("%-16s %10s %4d %12.1f %12.1f %12.1f %14.0f %10llu %8llu%s%s\n", system.c_str(),
              size_label(bytes).c_str(), threads, c.ns_per_pair_median, c.ns_per_pair_p10,
              c.ns_per_pair_p90, c.pairs_per_s_total, static_cast<unsigned long long>(c.pairs),
              static_cast<unsigned long long>(c.batches), extra.empty() ? "" : "  ", extra.c_str());
  std::fflush(stdout);
}

}  // namespace alloc_latency
