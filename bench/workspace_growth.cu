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

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "results_writer.hpp"
#include "tools/cli.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/vmmalloc.h"
#include "vmmalloc/workspace.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kGiB = std::size_t{1} << 30;
constexpr std::size_t kNaivePage = 2 * kMiB;
// The driver ABI version the entry points are asked for: the one of the
// toolkit this is built with (CUDA 13.0).
constexpr unsigned int kDriverApiVersion = 13000;

// ------------------------------------------------------------------ errors

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                             cudaGetErrorString(e) + ")");
  }
}
#define CUDA_CHECK(expr) check_cuda((expr), #expr)

// ------------------------------------------------------------ driver table

// The driver functions the bench calls directly, from the runtime's view of
// the driver (no libcuda link).
struct Driver {
  decltype(&::cuMemGetInfo) mem_get_info = nullptr;
  decltype(&::cuMemCreate) mem_create = nullptr;
  decltype(&::cuMemRelease) mem_release = nullptr;
  decltype(&::cuMemMap) mem_map = nullptr;
  decltype(&::cuMemUnmap) mem_unmap = nullptr;
  decltype(&::cuMemSetAccess) mem_set_access = nullptr;
  decltype(&::cuMemAddressReserve) mem_address_reserve = nullptr;
  decltype(&::cuMemAddressFree) mem_address_free = nullptr;
  decltype(&::cuMemGetAllocationGranularity) mem_get_allocation_granularity = nullptr;
  decltype(&::cuGetErrorName) get_error_name = nullptr;

  template <class Fn>
  static void load(Fn& fn, const char* symbol) {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult status{};
    const cudaError_t e =
        cudaGetDriverEntryPointByVersion(symbol, &p, kDriverApiVersion, cudaEnableDefault, &status);
    if (e != cudaSuccess || status != cudaDriverEntryPointSuccess || p == nullptr) {
      throw std::runtime_error(std::string("cudaGetDriverEntryPointByVersion(") + symbol +
                               "): " + cudaGetErrorName(e) + ", query status " +
                               std::to_string(static_cast<int>(status)));
    }
    fn = reinterpret_cast<Fn>(p);
  }

  void load_all() {
    load(mem_get_info, "cuMemGetInfo");
    load(mem_create, "cuMemCreate");
    load(mem_release, "cuMemRelease");
    load(mem_map, "cuMemMap");
    load(mem_unmap, "cuMemUnmap");
    load(mem_set_access, "cuMemSetAccess");
    load(mem_address_reserve, "cuMemAddressReserve");
    load(mem_address_free, "cuMemAddressFree");
    load(mem_get_allocation_granularity, "cuMemGetAllocationGranularity");
    load(get_error_name, "cuGetErrorName");
  }

  void check(CUresult r, const char* what) const {
    if (r == CUDA_SUCCESS) return;
    const char* name = nullptr;
    if (get_error_name == nullptr || get_error_name(r, &name) != CUDA_SUCCESS || name == nullptr) {
      name = "unknown CUresult";
    }
    throw std::runtime_error(std::string(what) + ": " + name + " (" +
                             std::to_string(static_cast<int>(r)) + ")");
  }
};

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

// --------------------------------------------------------- memory in use

// Device memory in use (total - free from cuMemGetInfo on the driver), read
// on demand after every measured operation and by a background sampler
// thread, folding both into one peak.
class MemoryMeter {
 public:
  MemoryMeter(const Driver& driver, int device, int sample_hz)
      : driver_(driver), device_(device), sample_hz_(sample_hz) {}
  ~MemoryMeter() {
    try {
      stop();
    } catch (...) {
      // A sampler failure was already reported by the stop() of the run.
    }
  }
  MemoryMeter(const MemoryMeter&) = delete;
  MemoryMeter& operator=(const MemoryMeter&) = delete;

  // Reads the driver now (the calling thread needs the device's context
  // current) and folds the reading into the peak.
  std::size_t read() {
    const std::size_t used = read_raw();
    fold(used);
    return used;
  }

  // Resets the peak to the current reading and starts the sampler.
  void start() {
    stop();
    peak_.store(read_raw());
    samples_.store(0);
    max_gap_ns_.store(0);
    sampler_error_.clear();
    stop_flag_.store(false);
    started_ = Clock::now();
    thread_ = std::thread([this] { sample_loop(); });
  }

  void stop() {
    if (!thread_.joinable()) return;
    stop_flag_.store(true);
    thread_.join();
    stopped_ = Clock::now();
    if (!sampler_error_.empty()) throw std::runtime_error("memory sampler: " + sampler_error_);
  }

  std::size_t peak() const { return peak_.load(); }
  double sample_rate_hz() const {
    const double s = std::chrono::duration<double>(stopped_ - started_).count();
    return s > 0 ? static_cast<double>(samples_.load()) / s : 0.0;
  }
  double max_gap_ms() const { return static_cast<double>(max_gap_ns_.load()) / 1e6; }

 private:
  std::size_t read_raw() const {
    std::size_t free_bytes = 0;
    std::size_t total_bytes = 0;
    driver_.check(driver_.mem_get_info(&free_bytes, &total_bytes), "cuMemGetInfo");
    return total_bytes - free_bytes;
  }

  void fold(std::size_t used) {
    std::size_t cur = peak_.load();
    while (used > cur && !peak_.compare_exchange_weak(cur, used)) {
    }
  }

  void sample_loop() {
    try {
      // cuMemGetInfo needs the device's (primary) context current here.
      CUDA_CHECK(cudaSetDevice(device_));
      const auto period = std::chrono::nanoseconds(1'000'000'000LL / sample_hz_);
      auto next = Clock::now();
      auto last = next;
      while (!stop_flag_.load(std::memory_order_relaxed)) {
        fold(read_raw());
        const auto now = Clock::now();
        const auto gap = std::chrono::duration_cast<std::chrono::nanoseconds>(now - last).count();
        if (samples_.fetch_add(1) > 0 && gap > max_gap_ns_.load()) max_gap_ns_.store(gap);
        last = now;
        next += period;
        if (next < now) next = now;  // fell behind: no burst to catch up
        std::this_thread::sleep_until(next);
      }
    } catch (const std::exception& e) {
      sampler_error_ = e.what();
    }
  }

  const Driver& driver_;
  int device_;
  int sample_hz_;
  std::atomic<std::size_t> peak_{0};
  std::atomic<long long> samples_{0};
  std::atomic<long long> max_gap_ns_{0};
  std::atomic<bool> stop_flag_{false};
  std::string sampler_error_;  // written by the sampler, read after join
  std::thread thread_;
  Clock::time_point started_{};
  Clock::time_point stopped_{};
};

// ------------------------------------------------------------------ systems

// One way to hold a growing buffer. allocate() makes the initial size from
// nothing (set-up, not timed as a resize); resize() grows it keeping the
// contents (what is timed); release() frees everything once the work stream
// has drained. Destructors free whatever is still held, without throwing.
class System {
 public:
  virtual ~System() = default;
  virtual const char* name() const = 0;
  virtual void allocate(std::size_t bytes) = 0;
  virtual void resize(std::size_t bytes) = 0;
  virtual void* data() const = 0;
  virtual void release() = 0;
  // Anything worth printing under the table.
  virtual std::string note() const { return {}; }
};

class CudaMallocSystem final : public System {
 public:
  explicit CudaMallocSystem(cudaStream_t stream) : stream_(stream) {}
  ~CudaMallocSystem() override {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  const char* name() const override { return "cudamalloc"; }
  void allocate(std::size_t bytes) override {
    CUDA_CHECK(cudaMalloc(&ptr_, bytes));
    size_ = bytes;
  }
  void resize(std::size_t bytes) override {
    void* fresh = nullptr;
    CUDA_CHECK(cudaMalloc(&fresh, bytes));
    const cudaError_t copied =
        cudaMemcpyAsync(fresh, ptr_, size_, cudaMemcpyDeviceToDevice, stream_);
    if (copied != cudaSuccess) {
      cudaFree(fresh);
      check_cuda(copied, "cudaMemcpyAsync");
    }
    // cudaFree waits for the device (the queued work) before it returns.
    CUDA_CHECK(cudaFree(ptr_));
    ptr_ = fresh;
    size_ = bytes;
  }
  void* data() const override { return ptr_; }
  void release() override {
    void* p = ptr_;
    ptr_ = nullptr;
    CUDA_CHECK(cudaFree(p));
  }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
};

class CudaMallocAsyncSystem final : public System {
 public:
  CudaMallocAsyncSystem(cudaStream_t stream, int device) : stream_(stream) {
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool_, device));
    // Release threshold 0 (the default, set explicitly): the pool gives
    // unused memory back at every synchronization.
    std::uint64_t zero = 0;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &zero));
    CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReservedMemHigh, &zero));
  }
  ~CudaMallocAsyncSystem() override {
    if (ptr_ != nullptr) {
      cudaFreeAsync(ptr_, stream_);
      cudaStreamSynchronize(stream_);
      cudaMemPoolTrimTo(pool_, 0);
    }
  }
  const char* name() const override { return "cudamallocasync"; }
  void allocate(std::size_t bytes) override {
    CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream_));
    size_ = bytes;
  }
  void resize(std::size_t bytes) override {
    void* fresh = nullptr;
    CUDA_CHECK(cudaMallocAsync(&fresh, bytes, stream_));
    CUDA_CHECK(cudaMemcpyAsync(fresh, ptr_, size_, cudaMemcpyDeviceToDevice, stream_));
    CUDA_CHECK(cudaFreeAsync(ptr_, stream_));
    ptr_ = fresh;
    size_ = bytes;
  }
  void* data() const override { return ptr_; }
  void release() override {
    std::uint64_t high = 0;
    CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemHigh, &high));
    reserved_high_ = high;
    void* p = ptr_;
    ptr_ = nullptr;
    CUDA_CHECK(cudaFreeAsync(p, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    CUDA_CHECK(cudaMemPoolTrimTo(pool_, 0));
  }
  std::string note() const override {
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "default pool, release threshold 0; pool reserved high-water mark %.2f GiB",
                  static_cast<double>(reserved_high_) / static_cast<double>(kGiB));
    return buf;
  }

 private:
  cudaStream_t stream_;
  cudaMemPool_t pool_ = nullptr;
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t reserved_high_ = 0;
};

// The naive VMM design: one 2 MiB handle per page, each created, mapped and
// given access on its own.
class VmmNaiveSystem final : public System {
 public:
  VmmNaiveSystem(const Driver& driver, int device, std::size_t capacity) : drv_(driver) {
    prop_.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop_.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop_.location.id = device;
    access_.location = prop_.location;
    access_.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    std::size_t granularity = 0;
    drv_.check(drv_.mem_get_allocation_granularity(&granularity, &prop_,
                                                   CU_MEM_ALLOC_GRANULARITY_MINIMUM),
               "cuMemGetAllocationGranularity");
    if (granularity == 0 || kNaivePage % granularity != 0) {
      throw std::runtime_error("vmm-naive-2mib: granularity " + std::to_string(granularity) +
                               " does not divide 2 MiB");
    }
    reserved_ = (capacity + kNaivePage - 1) / kNaivePage * kNaivePage;
    drv_.check(drv_.mem_address_reserve(&base_, reserved_, kNaivePage, 0, 0),
               "cuMemAddressReserve");
  }
  ~VmmNaiveSystem() override {
    try {
      release();
    } catch (...) {
      // Destructors do not throw; release() already freed what it could.
    }
  }
  const char* name() const override { return "vmm-naive-2mib"; }
  void allocate(std::size_t bytes) override { resize(bytes); }
  void resize(std::size_t bytes) override {
    const std::size_t pages = (bytes + kNaivePage - 1) / kNaivePage;
    if (pages * kNaivePage > reserved_) throw std::runtime_error("vmm-naive-2mib: past reservation");
    while (handles_.size() < pages) {
      const CUdeviceptr at = base_ + handles_.size() * kNaivePage;
      CUmemGenericAllocationHandle h = 0;
      drv_.check(drv_.mem_create(&h, kNaivePage, &prop_, 0), "cuMemCreate");
      CUresult r = drv_.mem_map(at, kNaivePage, 0, h, 0);
      if (r != CUDA_SUCCESS) {
        drv_.mem_release(h);
        drv_.check(r, "cuMemMap");
      }
      r = drv_.mem_set_access(at, kNaivePage, &access_, 1);
      if (r != CUDA_SUCCESS) {
        drv_.mem_unmap(at, kNaivePage);
        drv_.mem_release(h);
        drv_.check(r, "cuMemSetAccess");
      }
      handles_.push_back(h);
    }
  }
  void* data() const override { return reinterpret_cast<void*>(base_); }
  // Frees every page and the reservation; keeps going past a failure so
  // nothing leaks, then reports the first failure.
  void release() override {
    CUresult first = CUDA_SUCCESS;
    const char* first_call = "";
    auto note_failure = [&](CUresult r, const char* call) {
      if (r != CUDA_SUCCESS && first == CUDA_SUCCESS) {
        first = r;
        first_call = call;
      }
    };
    for (std::size_t i = handles_.size(); i-- > 0;) {
      note_failure(drv_.mem_unmap(base_ + i * kNaivePage, kNaivePage), "cuMemUnmap");
      note_failure(drv_.mem_release(handles_[i]), "cuMemRelease");
    }
    handles_.clear();
    if (base_ != 0) {
      note_failure(drv_.mem_address_free(base_, reserved_), "cuMemAddressFree");
      base_ = 0;
    }
    drv_.check(first, first_call);
  }

 private:
  const Driver& drv_;
  CUmemAllocationProp prop_{};
  CUmemAccessDesc access_{};
  CUdeviceptr base_ = 0;
  std::size_t reserved_ = 0;
  std::vector<CUmemGenericAllocationHandle> handles_;
};

class VmmallocWorkspaceSystem final : public System {
 public:
  VmmallocWorkspaceSystem(int device, std::size_t capacity)
      : device_(device), capacity_(capacity) {}
  const char* name() const override { return "vmmalloc-workspace"; }
  void allocate(std::size_t bytes) override {
    ws_.emplace(capacity_, device_);
    ws_->grow_to(bytes);
  }
  void resize(std::size_t bytes) override { ws_->grow_to(bytes); }
  void* data() const override { return ws_->data(); }
  void release() override {
    mapped_at_end_ = ws_->mapped_bytes();
    // The destructor hands the memory back once the null stream's work has
    // completed; the work stream was drained before this.
    ws_.reset();
  }
  std::string note() const override {
    return "mapped_bytes after the last grow: " + std::to_string(mapped_at_end_);
  }

 private:
  int device_;
  std::size_t capacity_;
  std::optional<vmm::Workspace> ws_;
  std::size_t mapped_at_end_ = 0;
};

// --------------------------------------------------------------- the run

struct Options {
  std::vector<std::size_t> sizes;
  std::vector<std::string> systems;
  double work_ms = 50.0;
  int device = 0;
  int sample_hz = 2000;
  std::string out = "bench/results/workspace_growth.json";
  std::string commit;
};

struct Row {
  std::string system;
  std::size_t final_bytes = 0;
  std::size_t peak_device_bytes = 0;
  std::vector<double> resize_ms;
  double max_resize_ms = 0;
  bool waited_for_queue = false;
  bool address_stable = true;
  // Reported on stdout only (not fields of the results file's row).
  double initial_alloc_ms = 0;
  unsigned long long mismatches = 0;
  unsigned long long first_bad_word = 0;
  std::size_t held_after_release = 0;
  double sample_hz = 0;
  double sample_max_gap_ms = 0;
  std::string note;
};

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

double round_to(double v, double unit) { return std::round(v / unit) * unit; }

void launch_fill(cudaStream_t s, void* base, std::size_t from_bytes, std::size_t to_bytes) {
  fill_kernel<<<kBlocks, kThreads, 0, s>>>(static_cast<unsigned int*>(base), from_bytes / 4,
                                          to_bytes / 4);
  CUDA_CHECK(cudaGetLastError());
}

std::unique_ptr<System> make_system(const std::string& name, Bench& b) {
  const std::size_t capacity = b.opt.sizes.back();
  if (name == "cudamalloc") return std::make_unique<CudaMallocSystem>(b.stream);
  if (name == "cudamallocasync") return std::make_unique<CudaMallocAsyncSystem>(b.stream, b.opt.device);
  if (name == "vmm-naive-2mib") return std::make_unique<VmmNaiveSystem>(b.drv, b.opt.device, capacity);
  if (name == "vmmalloc-workspace") return std::make_unique<VmmallocWorkspaceSystem>(b.opt.device, capacity);
  throw std::runtime_error("unknown system " + name);
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
    sys = make_system(name, b);
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

// ------------------------------------------------------------ options

using vmm::cli::parse_size;
using vmm::cli::split;

const std::vector<std::string>& all_systems() {
  static const std::vector<std::string> names{"cudamalloc", "cudamallocasync", "vmm-naive-2mib",
                                              "vmmalloc-workspace"};
  return names;
}

void usage(std::FILE* f) {
  std::fprintf(f,
               "usage: workspace_growth [--sizes 512M,1G,2G,3G,4G,5G] [--work-ms 50]\n"
               "                        [--systems cudamalloc,cudamallocasync,vmm-naive-2mib,"
               "vmmalloc-workspace]\n"
               "                        [--device 0] [--sample-hz 2000]\n"
               "                        [--out bench/results/workspace_growth.json] [--commit SHA]\n"
               "Sizes take binary suffixes K M G T, ascending, multiples of 4 bytes; the first is\n"
               "the initial allocation, each later one a timed resize. --commit defaults to\n"
               "$VMMALLOC_COMMIT, else \"unknown\".\n");
}

Options parse_options(int argc, char** argv) {
  Options o;
  o.sizes = {512 * kMiB, 1 * kGiB, 2 * kGiB, 3 * kGiB, 4 * kGiB, 5 * kGiB};
  o.systems = all_systems();
  if (const char* c = std::getenv("VMMALLOC_COMMIT"); c != nullptr && *c != '\0') o.commit = c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else if (a == "--sizes") {
      o.sizes.clear();
      for (const auto& s : split(value(), ',')) o.sizes.push_back(parse_size(s));
    } else if (a == "--systems") {
      o.systems = split(value(), ',');
    } else if (a == "--work-ms") {
      o.work_ms = std::stod(value());
    } else if (a == "--device") {
      o.device = std::stoi(value());
    } else if (a == "--sample-hz") {
      o.sample_hz = std::stoi(value());
    } else if (a == "--out") {
      o.out = value();
    } else if (a == "--commit") {
      o.commit = value();
    } else {
      throw std::invalid_argument("unknown option " + a);
    }
  }
  if (o.commit.empty()) o.commit = "unknown";
  if (o.sizes.size() < 2) throw std::invalid_argument("--sizes needs at least two sizes");
  for (std::size_t i = 0; i < o.sizes.size(); ++i) {
    if (o.sizes[i] == 0 || o.sizes[i] % 4 != 0) {
      throw std::invalid_argument("sizes must be positive multiples of 4 bytes");
    }
    if (i > 0 && o.sizes[i] <= o.sizes[i - 1]) throw std::invalid_argument("sizes must ascend");
  }
  if (o.systems.empty()) throw std::invalid_argument("--systems is empty");
  for (const auto& s : o.systems) {
    if (std::find(all_systems().begin(), all_systems().end(), s) == all_systems().end()) {
      throw std::invalid_argument("unknown system '" + s + "'");
    }
  }
  if (!(o.work_ms > 0)) throw std::invalid_argument("--work-ms must be positive");
  if (o.sample_hz <= 0) throw std::invalid_argument("--sample-hz must be positive");
  return o;
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

// ------------------------------------------------------------- output

std::string gib(std::size_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / static_cast<double>(kGiB));
  return buf;
}

std::string size_label(std::size_t b) {
  char buf[32];
  if (b % kGiB == 0) std::snprintf(buf, sizeof buf, "%zuG", b / kGiB);
  else if (b % kMiB == 0) std::snprintf(buf, sizeof buf, "%zuM", b / kMiB);
  else std::snprintf(buf, sizeof buf, "%zu", b);
  return buf;
}

void print_table(const Options& o, const std::vector<Row>& rows) {
  std::string steps;
  for (std::size_t i = 1; i < o.sizes.size(); ++i) {
    if (i > 1) steps += ", ";
    steps += size_label(o.sizes[i - 1]) + "->" + size_label(o.sizes[i]);
  }
  std::printf("\nresizes: %s (%.0f ms of GPU work queued before each)\n\n", steps.c_str(), o.work_ms);
  std::printf("%-20s %-44s %9s %10s %10s %6s %6s %6s %9s\n", "system", "resize_ms", "max_ms",
              "final", "peak", "peak/f", "waited", "stable", "data");
  for (const auto& r : rows) {
    std::string list;
    for (double v : r.resize_ms) {
      char buf[24];
      std::snprintf(buf, sizeof buf, "%s%.3f", list.empty() ? "" : " ", v);
      list += buf;
    }
    std::printf("%-20s %-44s %9.3f %10s %10s %6.2f %6s %6s %9s\n", r.system.c_str(), list.c_str(),
                r.max_resize_ms, gib(r.final_bytes).c_str(), gib(r.peak_device_bytes).c_str(),
                static_cast<double>(r.peak_device_bytes) / static_cast<double>(r.final_bytes),
                r.waited_for_queue ? "yes" : "no", r.address_stable ? "yes" : "no",
                r.mismatches == 0 ? "ok" : "CORRUPT");
  }
  std::printf("\n");
  for (const auto& r : rows) {
    std::printf("%s: initial allocation %.3f ms; held after release %s; sampler %.0f Hz (max gap "
                "%.2f ms)%s%s\n",
                r.system.c_str(), r.initial_alloc_ms, gib(r.held_after_release).c_str(), r.sample_hz,
                r.sample_max_gap_ms, r.note.empty() ? "" : "; ", r.note.c_str());
  }
}

// The rows of the results file, every value on a line of its own as
// nlohmann_json indents it; times rounded to 0.1 us.
vmm::bench::Json rows_json(const std::vector<Row>& rows) {
  using vmm::bench::Json;
  Json out = Json::array();
  for (const auto& r : rows) {
    Json j;
    j["system"] = r.system;
    j["final_bytes"] = r.final_bytes;
    j["peak_device_bytes"] = r.peak_device_bytes;
    j["resize_ms"] = Json::array();
    for (double v : r.resize_ms) j["resize_ms"].push_back(round_to(v, 1e-4));
    j["max_resize_ms"] = round_to(r.max_resize_ms, 1e-4);
    j["waited_for_queue"] = r.waited_for_queue;
    j["address_stable"] = r.address_stable;
    out.push_back(std::move(j));
  }
  return out;
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
