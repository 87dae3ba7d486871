// bench/alloc_latency: the cost of one allocate+free pair on a warm cache, at
// 512 B, 64 KiB, 1 MiB, 16 MiB and 256 MiB, with 1 and 8 threads, for:
//
//   vmmalloc         vmm::Allocator::instance(device): allocate(size, stream)
//                    then deallocate(ptr)
//   cudamalloc       cudaMalloc / cudaFree
//   cudamallocasync  cudaMallocAsync / cudaFreeAsync on the thread's stream,
//                    the device's default pool with its release threshold
//                    raised to the maximum for the run (a cache, like the
//                    others; restored and trimmed afterwards)
//
// Thread i always uses stream i of a fixed set of non-blocking streams made at
// start-up (never destroyed: allocators keep blocks tagged with them): each
// thread has its own stream. The loop, warm-up and statistics are those of
// alloc_latency_harness.hpp. PyTorch's caching allocator (torch-caching) is
// measured by bench/alloc_latency_torch, built against the installed torch;
// bench/alloc_latency.sh runs both and merges their rows into one file.
//
// Driver calls on the hot path: for every vmmalloc cell the same loop runs a
// second time on a vmm::Allocator over its own DeviceContext, whose backend
// (the default one) is wrapped by a disarmed FaultInjectingBackend, which
// counts every backend call by kind. driver_calls_per_pair = the calls made
// between the start of the timed batches and the end of the last thread,
// divided by the pairs timed. The timed figures of the row are those of
// Allocator::instance, the allocator users get.
//
// Each vmmalloc cell starts from an empty allocator: empty_cache(), then a
// wait (at most 2 s) until the reclaimer has unmapped what it returned, so
// the memory earlier cells left idle is not trimmed in the background
// during this cell's timed batches (those calls would be counted, and are
// not the hot path's).
//
// --backend host: vmmalloc alone, on the host backend (host memory, host
// streams), for relative measurements on machines without a GPU: no CUDA
// call is made. The timed rows then come from an allocator over a context
// of its own (a plain HostBackend); the results go to
// alloc_latency_host.json unless --out says otherwise, never the committed
// file.
//
// Links the static CUDA runtime and never libcuda (vmmalloc loads the driver
// itself at run time).

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "alloc_latency_harness.hpp"
#include "allocator/backend/backend.hpp"
#include "allocator/backend/default_backend.hpp"
#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/backend/host_backend.hpp"
#include "allocator/vm/device_context.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/vmmalloc.h"

namespace {

namespace al = alloc_latency;

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                             cudaGetErrorString(e) + ")");
  }
}
#define CUDA_CHECK(expr) check_cuda((expr), #expr)

// ----------------------------------------------------------------- systems

struct Streams {
  int device = 0;
  bool cuda = true;  // false: host streams (--backend host)
  std::vector<cudaStream_t> streams;
};

struct StreamThread {
  cudaStream_t stream = nullptr;
};

StreamThread stream_thread(const Streams& s, int index) {
  if (s.cuda) CUDA_CHECK(cudaSetDevice(s.device));
  return StreamThread{s.streams.at(static_cast<std::size_t>(index))};
}

struct VmmallocSys {
  using Thread = StreamThread;
  const Streams& streams;
  vmm::Allocator& allocator;
  Thread thread_setup(int i) { return stream_thread(streams, i); }
  void* alloc(Thread& t, std::size_t bytes) { return allocator.allocate(bytes, t.stream); }
  void release(Thread&, void* p) { allocator.deallocate(p); }
};

struct CudaMallocSys {
  using Thread = StreamThread;
  const Streams& streams;
  Thread thread_setup(int i) { return stream_thread(streams, i); }
  void* alloc(Thread&, std::size_t bytes) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, bytes));
    return p;
  }
  void release(Thread&, void* p) { CUDA_CHECK(cudaFree(p)); }
};

struct CudaMallocAsyncSys {
  using Thread = StreamThread;
  const Streams& streams;
  Thread thread_setup(int i) { return stream_thread(streams, i); }
  void* alloc(Thread& t, std::size_t bytes) {
    void* p = nullptr;
    CUDA_CHECK(cudaMallocAsync(&p, bytes, t.stream));
    return p;
  }
  void release(Thread& t, void* p) { CUDA_CHECK(cudaFreeAsync(p, t.stream)); }
};

// ---------------------------------------------------------------- options

struct Options {
  al::Common common;
  std::vector<std::string> systems;
  std::string backend = "cuda";  // or "host": vmmalloc on the host backend
  bool out_given = false;
  bool systems_given = false;
};

const std::vector<std::string>& all_systems() {
  static const std::vector<std::string> names{"vmmalloc", "cudamalloc", "cudamallocasync"};
  return names;
}

void usage(std::FILE* f) {
  std::fprintf(
      f,
      "usage: alloc_latency [options]\n"
      "  --systems vmmalloc,cudamalloc,cudamallocasync\n"
      "  --backend cuda|host           host: vmmalloc alone (the default systems) on the\n"
      "                                host backend, no GPU needed; alloc_latency_host.json\n"
      "%s"
      "Default output: bench/results/alloc_latency.json. PyTorch's caching allocator is\n"
      "measured by alloc_latency_torch; bench/alloc_latency.sh runs and merges both.\n",
      al::common_usage());
}

Options parse_options(int argc, char** argv) {
  Options o;
  al::set_common_defaults(o.common, "bench/results/alloc_latency.json");
  o.systems = all_systems();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    }
    if (a == "--out") o.out_given = true;
    if (al::parse_common(o.common, argc, argv, i)) continue;
    if (a == "--backend" && i + 1 < argc) {
      o.backend = argv[++i];
      if (o.backend != "cuda" && o.backend != "host") {
        throw std::invalid_argument("--backend must be cuda or host, not '" + o.backend + "'");
      }
      continue;
    }
    if (a == "--systems" && i + 1 < argc) {
      o.systems = al::split(argv[++i], ',');
      o.systems_given = true;
      continue;
    }
    throw std::invalid_argument("unknown option " + a);
  }
  al::validate_common(o.common);
  if (o.backend == "host") {
    if (!o.systems_given) o.systems = {"vmmalloc"};
    for (const auto& s : o.systems) {
      if (s != "vmmalloc") {
        throw std::invalid_argument("--backend host runs vmmalloc only, not '" + s +
                                    "' (pass --systems vmmalloc)");
      }
    }
    if (!o.out_given) o.common.out = "alloc_latency_host.json";
  }
  if (o.systems.empty()) throw std::invalid_argument("--systems is empty");
  for (const auto& s : o.systems) {
    if (std::find(all_systems().begin(), all_systems().end(), s) == all_systems().end()) {
      throw std::invalid_argument("unknown system '" + s + "'");
    }
  }
  return o;
}

bool wants(const Options& o, const char* name) {
  return std::find(o.systems.begin(), o.systems.end(), name) != o.systems.end();
}

// ------------------------------------------------------------ the systems

using Counts = std::array<std::uint64_t, vmm::kBackendCallKinds>;

Counts snapshot(const vmm::FaultInjectingBackend& b) {
  Counts c{};
  for (int k = 0; k < vmm::kBackendCallKinds; ++k)
    c[static_cast<std::size_t>(k)] = b.calls(static_cast<vmm::BackendCall>(k));
  return c;
}

std::uint64_t total(const Counts& c) {
  std::uint64_t s = 0;
  for (auto v : c) s += v;
  return s;
}

std::string describe(const Counts& before, const Counts& after) {
  std::string s;
  for (int k = 0; k < vmm::kBackendCallKinds; ++k) {
    const auto i = static_cast<std::size_t>(k);
    if (after[i] == before[i]) continue;
    if (!s.empty()) s += ' ';
    s += vmm::backend_call_name(static_cast<vmm::BackendCall>(k));
    s += '=';
    s += std::to_string(after[i] - before[i]);
  }
  return s.empty() ? "none" : s;
}

// Empties the allocator before a cell (see the top): returns what it caches
// and waits until the reclaimer has unmapped it.
void start_empty(vmm::Allocator& a) {
  a.empty_cache();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (a.stats().pending_bytes != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// The backend of a context of the bench's own: the default one (cuda), or a
// host backend over the bench's host streams.
std::unique_ptr<vmm::Backend> own_backend(const Options& o, const vmm::Config& config,
                                          const std::shared_ptr<vmm::HostStreams>& host_streams) {
  if (o.backend == "cuda") return vmm::make_default_backend(config, o.common.device);
  vmm::HostBackend::Options ho;
  ho.device = 0;
  ho.device_memory = config.host_device_memory;
  ho.streams = host_streams;
  return std::make_unique<vmm::HostBackend>(ho);
}

void run_vmmalloc(const Options& o, const Streams& streams,
                  const std::shared_ptr<vmm::HostStreams>& host_streams,
                  std::vector<al::Row>& rows) {
  const auto& c = o.common;
  vmm::Config config = vmm::Config::from_environment();
  if (o.backend == "host") {
    // The host "device" must hold every thread's block; pages are only
    // materialised where touched (the bench touches none).
    std::size_t largest = *std::max_element(c.sizes.begin(), c.sizes.end());
    config.host_device_memory =
        std::max(config.host_device_memory,
                 (largest + (2u << 20)) * static_cast<std::size_t>(al::max_threads(c)) * 4);
    config.validate();
  }
  // The timed rows: the allocator users get (cuda), or one over a plain host
  // backend of its own (host).
  std::unique_ptr<vmm::DeviceContext> host_context;
  std::unique_ptr<vmm::Allocator> host_allocator;
  if (o.backend == "host") {
    host_context =
        std::make_unique<vmm::DeviceContext>(own_backend(o, config, host_streams), config);
    host_allocator = std::make_unique<vmm::Allocator>(*host_context);
  }
  vmm::Allocator& instance = host_allocator ? *host_allocator : vmm::Allocator::instance(c.device);
  VmmallocSys timed{streams, instance};
  std::vector<al::Row> mine;
  for (std::size_t bytes : c.sizes) {
    for (int threads : c.threads) {
      start_empty(instance);
      const al::Cell cell = al::measure(timed, bytes, threads, c.timing);
      al::print_cell("vmmalloc", bytes, threads, cell);
      mine.push_back(
          {"vmmalloc", bytes, threads, cell.ns_per_pair_median, cell.pairs_per_s_total, {}});
    }
  }

  // The counted pass: the same loop over a context whose backend counts calls.
  auto counting =
      std::make_unique<vmm::FaultInjectingBackend>(own_backend(o, config, host_streams));
  vmm::FaultInjectingBackend& counter = *counting;
  if (std::strcmp(counter.name(), o.backend.c_str()) != 0) {
    throw std::runtime_error(std::string("the counted context got the '") + counter.name() +
                             "' backend, not " + o.backend);
  }
  vmm::DeviceContext context(std::move(counting), config);
  {
    vmm::Allocator counted_alloc(context);
    VmmallocSys counted{streams, counted_alloc};
    std::size_t row = 0;
    for (std::size_t bytes : c.sizes) {
      for (int threads : c.threads) {
        start_empty(counted_alloc);
        const Counts at_start = snapshot(counter);
        Counts before{};
        Counts after{};
        const al::Cell cell = al::measure(
            counted, bytes, threads, c.timing, [&] { before = snapshot(counter); },
            [&] { after = snapshot(counter); });
        const double per_pair = cell.pairs ? static_cast<double>(total(after) - total(before)) /
                                                 static_cast<double>(cell.pairs)
                                           : 0;
        mine[row].driver_calls_per_pair = per_pair;
        char extra[64];
        std::snprintf(extra, sizeof extra, "driver calls/pair %.6f", per_pair);
        al::print_cell("vmmalloc-count", bytes, threads, cell, extra);
        std::printf("    backend calls: warm-up %s; timed %s\n", describe(at_start, before).c_str(),
                    describe(before, after).c_str());
        ++row;
      }
    }
  }  // counted_alloc frees everything before its context goes
  rows.insert(rows.end(), mine.begin(), mine.end());
}

void run_cudamalloc(const Options& o, const Streams& streams, std::vector<al::Row>& rows) {
  CudaMallocSys sys{streams};
  for (std::size_t bytes : o.common.sizes) {
    for (int threads : o.common.threads) {
      const al::Cell cell = al::measure(sys, bytes, threads, o.common.timing);
      al::print_cell("cudamalloc", bytes, threads, cell);
      rows.push_back(
          {"cudamalloc", bytes, threads, cell.ns_per_pair_median, cell.pairs_per_s_total, {}});
    }
  }
}

void run_cudamallocasync(const Options& o, const Streams& streams, std::vector<al::Row>& rows) {
  cudaMemPool_t pool = nullptr;
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, o.common.device));
  std::uint64_t keep = UINT64_MAX;
  CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  CudaMallocAsyncSys sys{streams};
  for (std::size_t bytes : o.common.sizes) {
    for (int threads : o.common.threads) {
      const al::Cell cell = al::measure(sys, bytes, threads, o.common.timing);
      al::print_cell("cudamallocasync", bytes, threads, cell);
      rows.push_back(
          {"cudamallocasync", bytes, threads, cell.ns_per_pair_median, cell.pairs_per_s_total, {}});
    }
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  std::uint64_t zero = 0;
  CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &zero));
  CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
}

int run(int argc, char** argv) {
  Options opt;
  try {
    opt = parse_options(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "alloc_latency: %s\n", e.what());
    usage(stderr);
    return 2;
  }
  const auto& c = opt.common;
  const bool cuda = opt.backend == "cuda";

  cudaDeviceProp prop{};
  if (cuda) {
    CUDA_CHECK(cudaSetDevice(c.device));
    CUDA_CHECK(cudaFree(nullptr));  // the primary context, now
    CUDA_CHECK(cudaGetDeviceProperties(&prop, c.device));
  }

  if (cuda && wants(opt, "vmmalloc")) {
    // It must serve the GPU, or its rows would time host memory.
    const char* backend = nullptr;
    if (vmm_backend_name(c.device, &backend) != VMM_SUCCESS) {
      throw std::runtime_error(std::string("vmm_backend_name: ") + vmm_last_error());
    }
    if (std::strcmp(backend, "cuda") != 0) {
      throw std::runtime_error(std::string("vmmalloc serves device ") + std::to_string(c.device) +
                               " with the '" + backend + "' backend, not cuda");
    }
  }

  Streams streams;
  streams.device = c.device;
  streams.cuda = cuda;
  std::shared_ptr<vmm::HostStreams> host_streams;
  if (!cuda) host_streams = std::make_shared<vmm::HostStreams>();
  for (int i = 0; i < al::max_threads(c); ++i) {
    cudaStream_t s = nullptr;
    if (cuda) {
      CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    } else {
      s = host_streams->create();
    }
    streams.streams.push_back(s);
  }

  vmm::bench::RunInfo meta = vmm::bench::run_info("alloc_latency", c.commit, argc, argv);
  meta.device = cuda ? std::string(prop.name) : std::string("host backend");
  meta.driver = cuda ? vmm::bench::kernel_driver_version() : std::nullopt;
  if (cuda && !meta.driver) {
    int v = 0;
    if (cudaDriverGetVersion(&v) == cudaSuccess && v > 0) {
      meta.driver = "CUDA " + std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
    }
  }

  std::printf("alloc_latency: %s (device %d), driver %s, commit %s; each thread its own stream\n",
              meta.device.c_str(), c.device, meta.driver ? meta.driver->c_str() : "?",
              meta.commit.c_str());
  std::printf("timing: warm-up >= %.0f ms, batches of >= %.0f us, window %.0f ms per cell\n\n",
              c.timing.warmup_ms, c.timing.batch_us, c.timing.window_ms);
  al::print_header();

  std::vector<al::Row> rows;
  for (const auto& name : opt.systems) {
    if (name == "vmmalloc")
      run_vmmalloc(opt, streams, host_streams, rows);
    else if (name == "cudamalloc")
      run_cudamalloc(opt, streams, rows);
    else if (name == "cudamallocasync")
      run_cudamallocasync(opt, streams, rows);
  }
  if (cuda) CUDA_CHECK(cudaDeviceSynchronize());

  al::write_results(c.out, meta, rows);
  std::printf("\nwrote %s\n", c.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "alloc_latency: %s\n", e.what());
    return 1;
  }
}
