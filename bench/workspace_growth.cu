// bench/workspace_growth: a workspace grown 0.5 -> 1 -> 2 -> 3 -> 4 -> 5 GiB
// (by default) with 50 ms of GPU work queued before each resize, measured for
// several systems in one process on one card:
//
//   cudamalloc          new cudaMalloc, cudaMemcpyAsync old->new, cudaFree old
//                       (the realloc a user would write)
//   cudamallocasync     the same with cudaMallocAsync / cudaFreeAsync on the
//                       work stream (default pool, release threshold 0)
//   vmm-naive-2mib      VMM, the whole range reserved once, each grow maps one
//                       2 MiB handle per page: create + map + set access each
//   vmmalloc-workspace  vmm::Workspace grown in place with grow_to
//
// Per system: host time of each resize (the initial allocation is set-up, not
// a resize), peak device memory in use over the baseline, whether a resize
// waited for the queued work, whether the base address stayed, and a data
// check (a pattern written into every part as it appears, checked after the
// last grow). Writes bench/results/workspace_growth.json (the results format
// of docs/benchmarks.md, through bench/results_writer.hpp) and prints a table.
//
// Never links libcuda: driver functions come from
// cudaGetDriverEntryPointByVersion, so cuMemGetInfo is read from the driver
// itself, never through an interposed runtime call.
//
// This file holds the kernels and the run; workspace_growth_cuda.hpp the
// error checks and driver table, workspace_growth_meter.* the memory meter,
// workspace_growth_systems.* the systems, workspace_growth_options.* the
// command line and workspace_growth_report.* the table and results rows.

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "results_writer.hpp"
#include "vmmalloc/vmmalloc.h"
#include "workspace_growth_cuda.hpp"
#include "workspace_growth_meter.hpp"
#include "workspace_growth_options.hpp"
#include "workspace_growth_report.hpp"
#include "workspace_growth_systems.hpp"

namespace {

using namespace vmm::bench::growth;

// ----------------------------------------------------------------- kernels

__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// The queued GPU work: one thread spins for `ns` nanoseconds of the GPU's
// global timer. It reads the buffer's first word when it starts and stores it
// back when it ends, so the work really uses the buffer across its whole run
// (a system that released or moved that memory under it would fault or lose
// data); the value is unchanged, so the data check still holds.
__global__ void spin_kernel(unsigned long long ns, unsigned int* touch) {
  const unsigned long long start = global_timer_ns();
  unsigned int value = 0;
  if (touch != nullptr) value = *reinterpret_cast<volatile unsigned int*>(touch);
  while (global_timer_ns() - start < ns) {
    __nanosleep(256);
  }
  if (touch != nullptr) *reinterpret_cast<volatile unsigned int*>(touch) = value;
}

__host__ __device__ __forceinline__ unsigned int pattern_word(unsigned long long index) {
  // A different value for every word (within 2^32 words), so a copy to the
  // wrong offset or a page mapped twice shows up.
  return static_cast<unsigned int>((index * 0x9E3779B97F4A7C15ull) >> 32) ^ 0x5bd1e995u;
}

__global__ void fill_kernel(unsigned int* words, unsigned long long begin, unsigned long long end) {
  const unsigned long long stride = static_cast<unsigned long long>(gridDim.x) * blockDim.x;
  for (unsigned long long i = begin + blockIdx.x * static_cast<unsigned long long>(blockDim.x) +
                              threadIdx.x;
       i < end; i += stride) {
    words[i] = pattern_word(i);
  }
}

struct CheckResult {
  unsigned long long mismatches;
  unsigned long long first_bad;
};

__global__ void check_kernel(const unsigned int* words, unsigned long long count,
                             CheckResult* result) {
  const unsigned long long stride = static_cast<unsigned long long>(gridDim.x) * blockDim.x;
  unsigned long long bad = 0;
  unsigned long long first = ~0ull;
  for (unsigned long long i = blockIdx.x * static_cast<unsigned long long>(blockDim.x) + threadIdx.x;
       i < count; i += stride) {
    if (words[i] != pattern_word(i)) {
      if (bad == 0) first = i;
      ++bad;
    }
  }
  // One atomic per thread at most, so even a fully corrupt buffer is counted
  // in bounded time.
  if (bad != 0) {
    atomicAdd(&result->mismatches, bad);
    atomicMin(&result->first_bad, first);
  }
}

constexpr unsigned kBlocks = 1024;
constexpr unsigned kThreads = 256;

// --------------------------------------------------------------- the run

// Fixed state shared by all systems, set up before any baseline.
struct Bench {
  const Options& opt;
  Driver& drv;
  MemoryMeter& meter;
  cudaStream_t stream = nullptr;
  cudaEvent_t queued = nullptr;
  CheckResult* check = nullptr;  // device
  unsigned long long spin_ns = 0;
};

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void launch_fill(cudaStream_t s, void* base, std::size_t from_bytes, std::size_t to_bytes) {
  fill_kernel<<<kBlocks, kThreads, 0, s>>>(static_cast<unsigned int*>(base), from_bytes / 4,
                                          to_bytes / 4);
  CUDA_CHECK(cudaGetLastError());
}

Row run_system(const std::string& name, Bench& b) {
  const auto& sizes = b.opt.sizes;
  Row row;
  row.system = name;
  row.final_bytes = sizes.back();

  // Baseline: everything before this (context, vmmalloc's device state, the
  // bench's fixed buffers, earlier systems' leftovers) is not counted.
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::size_t baseline = b.meter.read();
  b.meter.start();

  std::unique_ptr<System> sys;
  try {
    sys = make_system(name, b.stream, b.drv, b.opt.device, sizes.back());
    auto t0 = Clock::now();
    sys->allocate(sizes.front());
    row.initial_alloc_ms = ms_since(t0);
    b.meter.read();
    void* const base0 = sys->data();
    launch_fill(b.stream, base0, 0, sizes.front());

    for (std::size_t i = 1; i < sizes.size(); ++i) {
      // Each resize sees exactly the 50 ms of work queued for it.
      CUDA_CHECK(cudaStreamSynchronize(b.stream));
      spin_kernel<<<1, 1, 0, b.stream>>>(b.spin_ns, static_cast<unsigned int*>(sys->data()));
      CUDA_CHECK(cudaGetLastError());
      CUDA_CHECK(cudaEventRecord(b.queued, b.stream));

      t0 = Clock::now();
      sys->resize(sizes[i]);
      const double ms = ms_since(t0);

      const cudaError_t q = cudaEventQuery(b.queued);
      if (q != cudaSuccess && q != cudaErrorNotReady) check_cuda(q, "cudaEventQuery");
      if (q == cudaSuccess) row.waited_for_queue = true;
      b.meter.read();
      row.resize_ms.push_back(ms);
      if (sys->data() != base0) row.address_stable = false;
      launch_fill(b.stream, sys->data(), sizes[i - 1], sizes[i]);
    }

    // Data check over the whole final size.
    CUDA_CHECK(cudaStreamSynchronize(b.stream));
    const CheckResult init{0, ~0ull};
    CUDA_CHECK(cudaMemcpyAsync(b.check, &init, sizeof init, cudaMemcpyHostToDevice, b.stream));
    check_kernel<<<kBlocks, kThreads, 0, b.stream>>>(static_cast<const unsigned int*>(sys->data()),
                                                     sizes.back() / 4, b.check);
    CUDA_CHECK(cudaGetLastError());
    CheckResult got{};
    CUDA_CHECK(cudaMemcpyAsync(&got, b.check, sizeof got, cudaMemcpyDeviceToHost, b.stream));
    CUDA_CHECK(cudaStreamSynchronize(b.stream));
    row.mismatches = got.mismatches;
    row.first_bad_word = got.first_bad;

    b.meter.read();
    b.meter.stop();
    sys->release();
  } catch (...) {
    // Drain and free before reporting, so the next system starts clean.
    cudaStreamSynchronize(b.stream);
    sys.reset();
    try {
      b.meter.stop();
    } catch (...) {
    }
    throw;
  }
  row.note = sys->note();
  sys.reset();

  row.peak_device_bytes = b.meter.peak() > baseline ? b.meter.peak() - baseline : 0;
  row.max_resize_ms = *std::max_element(row.resize_ms.begin(), row.resize_ms.end());
  row.sample_hz = b.meter.sample_rate_hz();
  row.sample_max_gap_ms = b.meter.max_gap_ms();

  // What is still held once everything is freed (vmmalloc's pool may keep
  // freed chunks cached up to its limit, by design). Give deferred frees a
  // moment to land.
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto deadline = Clock::now() + std::chrono::seconds(1);
  for (;;) {
    const std::size_t used = b.meter.read();
    row.held_after_release = used > baseline ? used - baseline : 0;
    if (row.held_after_release == 0 || Clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return row;
}

// ---------------------------------------------------------- run metadata

// The kernel module's version ("580.159.04") where the driver publishes it;
// otherwise the CUDA version the driver supports.
std::string driver_version() {
  if (auto v = vmm::bench::kernel_driver_version()) return *v;
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess || v <= 0) return "unknown";
  return "CUDA " + std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

int run(int argc, char** argv) {
  Options opt;
  try {
    opt = parse_options(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "workspace_growth: %s\n", e.what());
    usage(stderr);
    return 2;
  }

  // ---- fixed set-up, all before any baseline
  CUDA_CHECK(cudaSetDevice(opt.device));
  CUDA_CHECK(cudaFree(nullptr));  // create the primary context now
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device));
  Driver drv;
  drv.load_all();

  // vmmalloc's per-device state is a library set-up like cuBLAS's: made
  // here, before the baselines. It must serve the GPU, or its row would
  // measure host memory.
  if (std::find(opt.systems.begin(), opt.systems.end(), "vmmalloc-workspace") != opt.systems.end()) {
    const char* backend = nullptr;
    if (vmm_backend_name(opt.device, &backend) != VMM_SUCCESS) {
      throw std::runtime_error(std::string("vmm_backend_name: ") + vmm_last_error());
    }
    if (std::strcmp(backend, "cuda") != 0) {
      throw std::runtime_error(std::string("vmmalloc serves device ") + std::to_string(opt.device) +
                               " with the '" + backend + "' backend, not cuda: " + vmm_last_error());
    }
  }

  MemoryMeter meter(drv, opt.device, opt.sample_hz);
  Bench b{opt, drv, meter};
  CUDA_CHECK(cudaStreamCreateWithFlags(&b.stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaEventCreateWithFlags(&b.queued, cudaEventDisableTiming));
  CUDA_CHECK(cudaMalloc(&b.check, sizeof(CheckResult)));
  b.spin_ns = static_cast<unsigned long long>(opt.work_ms * 1e6);

  // Warm every kernel and the device-to-device copy on a scratch buffer, so
  // lazy module loading does not land inside a measured system; time one
  // spin to show the queued work is what it claims.
  void* scratch = nullptr;
  CUDA_CHECK(cudaMalloc(&scratch, 2 * kMiB));
  launch_fill(b.stream, scratch, 0, kMiB);
  CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(scratch) + kMiB, scratch, kMiB,
                             cudaMemcpyDeviceToDevice, b.stream));
  check_kernel<<<kBlocks, kThreads, 0, b.stream>>>(static_cast<unsigned int*>(scratch), kMiB / 4, b.check);
  CUDA_CHECK(cudaGetLastError());
  cudaEvent_t e0 = nullptr;
  cudaEvent_t e1 = nullptr;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  CUDA_CHECK(cudaEventRecord(e0, b.stream));
  spin_kernel<<<1, 1, 0, b.stream>>>(b.spin_ns, static_cast<unsigned int*>(scratch));
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaEventRecord(e1, b.stream));
  CUDA_CHECK(cudaEventSynchronize(e1));
  float spin_measured = 0;
  CUDA_CHECK(cudaEventElapsedTime(&spin_measured, e0, e1));
  CUDA_CHECK(cudaEventDestroy(e0));
  CUDA_CHECK(cudaEventDestroy(e1));
  CUDA_CHECK(cudaFree(scratch));

  vmm::bench::RunInfo meta = vmm::bench::run_info("workspace_growth", opt.commit, argc, argv);
  meta.device = prop.name;
  meta.driver = driver_version();

  std::printf("workspace_growth: %s (device %d), driver %s, commit %s\n", meta.device.c_str(),
              opt.device, meta.driver->c_str(), meta.commit.c_str());
  std::printf("queued work: spin kernel of %.1f ms requested, %.2f ms measured with events\n",
              opt.work_ms, spin_measured);
  if (spin_measured < 0.9 * opt.work_ms) {
    std::fprintf(stderr, "warning: the spin kernel ran shorter than requested\n");
  }

  std::vector<Row> rows;
  std::vector<std::string> failures;
  for (const auto& name : opt.systems) {
    std::printf("running %s ...\n", name.c_str());
    std::fflush(stdout);
    try {
      Row r = run_system(name, b);
      if (r.mismatches != 0) {
        failures.push_back(name + ": data check found " + std::to_string(r.mismatches) +
                           " wrong words, the first at word " + std::to_string(r.first_bad_word));
      }
      if (r.sample_hz < 1000) {
        std::fprintf(stderr, "warning: %s: memory sampler ran at %.0f Hz (< 1 kHz)\n", name.c_str(),
                     r.sample_hz);
      }
      rows.push_back(std::move(r));
    } catch (const std::exception& e) {
      failures.push_back(name + ": " + e.what());
      std::fprintf(stderr, "%s failed: %s\n", name.c_str(), e.what());
    }
  }

  print_table(opt, rows);

  CUDA_CHECK(cudaFree(b.check));
  CUDA_CHECK(cudaEventDestroy(b.queued));
  CUDA_CHECK(cudaStreamDestroy(b.stream));

  if (!failures.empty()) {
    std::fprintf(stderr, "\nFAILED (no results written):\n");
    for (const auto& f : failures) std::fprintf(stderr, "  %s\n", f.c_str());
    return 1;
  }
  vmm::bench::write_results(opt.out, meta, rows_json(rows), vmm::bench::RowLayout::kIndented);
  std::printf("\nwrote %s\n", opt.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "workspace_growth: %s\n", e.what());
    return 1;
  }
}
