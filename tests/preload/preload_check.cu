// A plain CUDA C++ program that allocates every way CUDA offers and checks
// its data with kernels. It knows nothing of vmmalloc: CTest runs it with and
// without LD_PRELOAD=libvmmalloc_preload.so, built with the shared and with
// the static runtime, and compares the "result:" lines (run_case.cmake). It
// reaches the driver API without linking libcuda, as frameworks do: through
// cudaGetDriverEntryPointByVersion and through dlsym on libcuda.so.1.
//
//   preload_check workload             many sizes; runtime and driver API;
//                                      sync, stream-ordered and captured
//   preload_check running-free fence|sync|order [blocking]
//                                      cudaFree while a kernel still uses
//                                      the memory: the memory must go to no
//                                      other work before the kernel ends;
//                                      fence: cudaFree returns at once,
//                                      sync: it waits, as CUDA's does,
//                                      order: it returns at once and the
//                                      memory is handed out again at once,
//                                      its new work queued behind the
//                                      kernel on the GPU; blocking: the two
//                                      streams are blocking ones (else
//                                      non-blocking)
//   preload_check reset                cudaDeviceReset, then allocate again
//   preload_check misuse               double free, cudaFree(NULL), foreign
//                                      pointers (managed, pool)
//
// Exit status: 0 all checks passed, 1 a check failed, 77 no GPU.
#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>
#include <dlfcn.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "check.hpp"

namespace {

unsigned long g_allocations = 0;  // allocation calls that succeeded

#define CUDA_OK(call)                                                                    \
  do {                                                                                   \
    const cudaError_t rc_ = (call);                                                      \
    if (rc_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "FAILED %s:%d: %s: %s\n", __FILE__, __LINE__, #call,          \
                   cudaGetErrorName(rc_));                                               \
      ++g_failures;                                                                      \
    }                                                                                    \
  } while (0)

#define CU_OK(call)                                                                    \
  do {                                                                                 \
    const CUresult rc_ = (call);                                                       \
    if (rc_ != CUDA_SUCCESS) {                                                         \
      std::fprintf(stderr, "FAILED %s:%d: %s: CUresult %d\n", __FILE__, __LINE__, #call, \
                   static_cast<int>(rc_));                                             \
      ++g_failures;                                                                    \
    }                                                                                  \
  } while (0)

// ------------------------------------------------------------- kernels

__device__ __host__ std::uint8_t pattern(std::uint32_t seed, std::uint64_t i) {
  std::uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (static_cast<std::uint64_t>(seed) << 17);
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return static_cast<std::uint8_t>(x);
}

__global__ void fill(std::uint8_t* p, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n;
       i += std::size_t{gridDim.x} * blockDim.x) {
    p[i] = pattern(seed, i);
  }
}

// Weighted byte sum (order-independent) and the count of bytes that differ
// from the pattern.
__global__ void digest(const std::uint8_t* p, std::size_t n, std::uint32_t seed,
                       unsigned long long* out) {
  unsigned long long sum = 0;
  unsigned long long bad = 0;
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n;
       i += std::size_t{gridDim.x} * blockDim.x) {
    sum += static_cast<unsigned long long>(p[i]) * (i % 251 + 1);
    bad += p[i] != pattern(seed, i);
  }
  atomicAdd(&out[0], sum);
  atomicAdd(&out[1], bad);
}

// Fills p with 0xA5, tells the host it started, spins for spin_ns, then
// counts the bytes that are no longer 0xA5: any other work given the memory
// meanwhile shows up here. One block, so __syncthreads orders the phases.
__global__ void hold(std::uint8_t* p, std::size_t n, unsigned long long spin_ns,
                     volatile int* started, unsigned long long* bad) {
  for (std::size_t i = threadIdx.x; i < n; i += blockDim.x) p[i] = 0xA5;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence_system();
    *started = 1;
    unsigned long long t0 = 0;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    unsigned long long t = t0;
    while (t - t0 < spin_ns) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  }
  __syncthreads();
  unsigned long long count = 0;
  for (std::size_t i = threadIdx.x; i < n; i += blockDim.x) count += p[i] != 0xA5;
  atomicAdd(bad, count);
}

// ------------------------------------------------------------- helpers

struct Digest {
  unsigned long long sum = 0;
  unsigned long long bad = 0;
};

unsigned long long* g_digest_buf = nullptr;  // device, 2 words (cudaMalloc'd once)

Digest fill_and_digest(void* p, std::size_t n, std::uint32_t seed, cudaStream_t s) {
  fill<<<256, 256, 0, s>>>(static_cast<std::uint8_t*>(p), n, seed);
  CUDA_OK(cudaMemsetAsync(g_digest_buf, 0, 2 * sizeof(unsigned long long), s));
  digest<<<256, 256, 0, s>>>(static_cast<std::uint8_t*>(p), n, seed, g_digest_buf);
  Digest d;
  unsigned long long host[2] = {0, 0};
  CUDA_OK(cudaMemcpyAsync(host, g_digest_buf, sizeof host, cudaMemcpyDeviceToHost, s));
  CUDA_OK(cudaStreamSynchronize(s));
  d.sum = host[0];
  d.bad = host[1];
  return d;
}

Digest redigest(void* p, std::size_t n, std::uint32_t seed, cudaStream_t s) {
  CUDA_OK(cudaMemsetAsync(g_digest_buf, 0, 2 * sizeof(unsigned long long), s));
  digest<<<256, 256, 0, s>>>(static_cast<const std::uint8_t*>(p), n, seed, g_digest_buf);
  unsigned long long host[2] = {0, 0};
  CUDA_OK(cudaMemcpyAsync(host, g_digest_buf, sizeof host, cudaMemcpyDeviceToHost, s));
  CUDA_OK(cudaStreamSynchronize(s));
  return Digest{host[0], host[1]};
}

void result(const char* phase, std::size_t n, const Digest& d) {
  std::printf("result: %s bytes %zu checksum %llu mismatches %llu\n", phase, n, d.sum, d.bad);
  CHECK(d.bad == 0);
}

// Driver entry points, taken both ways frameworks take them.
struct Driver {
  PFN_cuMemAlloc_v3020 MemAlloc = nullptr;
  PFN_cuMemFree_v3020 MemFree = nullptr;
  PFN_cuMemAllocAsync_v11020 MemAllocAsync = nullptr;
  PFN_cuMemFreeAsync_v11020 MemFreeAsync = nullptr;
};

Driver load_driver() {
  Driver d;
  cudaDriverEntryPointQueryResult status{};
  CUDA_OK(cudaGetDriverEntryPointByVersion("cuMemAlloc", reinterpret_cast<void**>(&d.MemAlloc),
                                           12000, cudaEnableDefault, &status));
  CUDA_OK(cudaGetDriverEntryPointByVersion("cuMemAllocAsync",
                                           reinterpret_cast<void**>(&d.MemAllocAsync), 12000,
                                           cudaEnableDefault, &status));
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  CHECK(lib != nullptr);
  auto get = reinterpret_cast<PFN_cuGetProcAddress_v12000>(dlsym(lib, "cuGetProcAddress_v2"));
  CHECK(get != nullptr);
  if (get != nullptr) {
    CUdriverProcAddressQueryResult s{};
    CU_OK(get("cuMemFree", reinterpret_cast<void**>(&d.MemFree), 12000,
              CU_GET_PROC_ADDRESS_DEFAULT, &s));
    CU_OK(get("cuMemFreeAsync", reinterpret_cast<void**>(&d.MemFreeAsync), 12000,
              CU_GET_PROC_ADDRESS_DEFAULT, &s));
  }
  CHECK(d.MemAlloc && d.MemFree && d.MemAllocAsync && d.MemFreeAsync);
  return d;
}

void* runtime_alloc(std::size_t n) {
  void* p = nullptr;
  const cudaError_t rc = cudaMalloc(&p, n);
  CUDA_OK(rc);
  if (rc == cudaSuccess) ++g_allocations;
  return p;
}

const std::vector<std::size_t> kSizes = {1,         100,        511,       512,
                                         4097,      65536,      1 << 20,   (3 << 20) + 7,
                                         16 << 20,  64 << 20,   200 << 20};

// ------------------------------------------------------------- modes

int workload() {
  g_digest_buf = static_cast<unsigned long long*>(runtime_alloc(2 * sizeof(unsigned long long)));
  const Driver drv = load_driver();
  cudaStream_t s1 = nullptr;
  cudaStream_t s2 = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  CUDA_OK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  std::uint32_t seed = 1;

  // 1. Runtime, synchronous API: every size live at once, half freed and
  //    allocated again, the others' contents unchanged.
  std::vector<void*> live;
  std::vector<std::uint32_t> seeds;
  for (std::size_t n : kSizes) {
    void* p = runtime_alloc(n);
    live.push_back(p);
    seeds.push_back(seed);
    result("cudaMalloc", n, fill_and_digest(p, n, seed++, nullptr));
  }
  for (std::size_t i = 0; i < live.size(); i += 2) {
    CUDA_OK(cudaFree(live[i]));
    live[i] = runtime_alloc(kSizes[i]);
    seeds[i] = seed;
    result("cudaMalloc again", kSizes[i], fill_and_digest(live[i], kSizes[i], seed++, s1));
  }
  for (std::size_t i = 0; i < live.size(); ++i) {
    result("cudaMalloc kept", kSizes[i], redigest(live[i], kSizes[i], seeds[i], s2));
    CUDA_OK(cudaFree(live[i]));
  }

  // 2. Runtime, stream-ordered: allocate on s1, free on s1, allocate on s2
  //    after an event from s1, and on the legacy stream.
  for (std::size_t n : kSizes) {
    void* a = nullptr;
    CUDA_OK(cudaMallocAsync(&a, n, s1));
    ++g_allocations;
    result("cudaMallocAsync s1", n, fill_and_digest(a, n, seed++, s1));
    CUDA_OK(cudaFreeAsync(a, s1));
    cudaEvent_t e;
    CUDA_OK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    CUDA_OK(cudaEventRecord(e, s1));
    CUDA_OK(cudaStreamWaitEvent(s2, e, 0));
    void* b = nullptr;
    CUDA_OK(cudaMallocAsync(&b, n, s2));
    ++g_allocations;
    result("cudaMallocAsync s2", n, fill_and_digest(b, n, seed++, s2));
    CUDA_OK(cudaFreeAsync(b, s2));
    void* c = nullptr;
    CUDA_OK(cudaMallocAsync(&c, n, nullptr));
    ++g_allocations;
    result("cudaMallocAsync legacy", n, fill_and_digest(c, n, seed++, nullptr));
    CUDA_OK(cudaFreeAsync(c, nullptr));
    CUDA_OK(cudaEventDestroy(e));
  }
  CUDA_OK(cudaDeviceSynchronize());

  // 3. Driver API, synchronous and stream-ordered.
  for (std::size_t n : kSizes) {
    CUdeviceptr p = 0;
    CU_OK(drv.MemAlloc(&p, n));
    ++g_allocations;
    result("cuMemAlloc", n, fill_and_digest(reinterpret_cast<void*>(p), n, seed++, nullptr));
    CU_OK(drv.MemFree(p));
    CUdeviceptr q = 0;
    CU_OK(drv.MemAllocAsync(&q, n, s1));
    ++g_allocations;
    result("cuMemAllocAsync", n, fill_and_digest(reinterpret_cast<void*>(q), n, seed++, s1));
    CU_OK(drv.MemFreeAsync(q, s1));
  }

  // 4. Mixed: runtime allocation freed by the driver and the other way.
  {
    void* p = runtime_alloc(1 << 20);
    result("cudaMalloc/cuMemFree", 1 << 20, fill_and_digest(p, 1 << 20, seed++, nullptr));
    CU_OK(drv.MemFree(reinterpret_cast<CUdeviceptr>(p)));
    CUdeviceptr q = 0;
    CU_OK(drv.MemAlloc(&q, 1 << 20));
    ++g_allocations;
    result("cuMemAlloc/cudaFree", 1 << 20,
           fill_and_digest(reinterpret_cast<void*>(q), 1 << 20, seed++, nullptr));
    CUDA_OK(cudaFree(reinterpret_cast<void*>(q)));
  }

  // 5. A stream-ordered allocation inside a graph capture stays CUDA's graph
  //    memory: the captured graph runs twice and checks its data each time.
  {
    cudaStream_t cs = nullptr;
    CUDA_OK(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
    const std::size_t n = 8 << 20;
    CUDA_OK(cudaStreamBeginCapture(cs, cudaStreamCaptureModeGlobal));
    void* g = nullptr;
    CUDA_OK(cudaMallocAsync(&g, n, cs));
    fill<<<256, 256, 0, cs>>>(static_cast<std::uint8_t*>(g), n, 4242);
    CUDA_OK(cudaMemsetAsync(g_digest_buf, 0, 2 * sizeof(unsigned long long), cs));
    digest<<<256, 256, 0, cs>>>(static_cast<std::uint8_t*>(g), n, 4242, g_digest_buf);
    CUDA_OK(cudaFreeAsync(g, cs));
    cudaGraph_t graph = nullptr;
    CUDA_OK(cudaStreamEndCapture(cs, &graph));
    cudaGraphExec_t exec = nullptr;
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    for (int run = 0; run < 2; ++run) {
      CUDA_OK(cudaGraphLaunch(exec, cs));
      unsigned long long host[2] = {0, 0};
      CUDA_OK(cudaMemcpyAsync(host, g_digest_buf, sizeof host, cudaMemcpyDeviceToHost, cs));
      CUDA_OK(cudaStreamSynchronize(cs));
      result("captured cudaMallocAsync", n, Digest{host[0], host[1]});
    }
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));
    CUDA_OK(cudaStreamDestroy(cs));
  }

  // 6. Churn: a fixed pseudo-random mix of every way, many live at once.
  {
    std::uint64_t rng = 12345;
    auto next = [&] {
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      return rng >> 33;
    };
    struct Live {
      void* p;
      std::size_t n;
      std::uint32_t seed;
      int how;
    };
    std::vector<Live> blocks;
    cudaStream_t streams[3] = {nullptr, s1, s2};
    unsigned long long total = 0;
    for (int step = 0; step < 300; ++step) {
      if (!blocks.empty() && (next() % 3 == 0 || blocks.size() > 24)) {
        const std::size_t i = next() % blocks.size();
        const Live b = blocks[i];
        const Digest d = redigest(b.p, b.n, b.seed, s2);
        CHECK(d.bad == 0);
        total += d.sum;
        if (b.how == 0) CUDA_OK(cudaFree(b.p));
        if (b.how == 1) CU_OK(drv.MemFree(reinterpret_cast<CUdeviceptr>(b.p)));
        if (b.how == 2) CUDA_OK(cudaFreeAsync(b.p, s2));
        if (b.how == 3) CU_OK(drv.MemFreeAsync(reinterpret_cast<CUdeviceptr>(b.p), s2));
        blocks.erase(blocks.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      const std::size_t n = std::size_t{1} << (next() % 24) | next() % 4096;
      const int how = static_cast<int>(next() % 4);
      cudaStream_t s = streams[next() % 3];
      void* p = nullptr;
      if (how == 0) p = runtime_alloc(n);
      if (how == 1) {
        CUdeviceptr d = 0;
        CU_OK(drv.MemAlloc(&d, n));
        ++g_allocations;
        p = reinterpret_cast<void*>(d);
      }
      if (how == 2) {
        CUDA_OK(cudaMallocAsync(&p, n, s));
        ++g_allocations;
      }
      if (how == 3) {
        CUdeviceptr d = 0;
        CU_OK(drv.MemAllocAsync(&d, n, s));
        ++g_allocations;
        p = reinterpret_cast<void*>(d);
      }
      const Digest d = fill_and_digest(p, n, seed, s);
      CHECK(d.bad == 0);
      total += d.sum;
      // Frees below are ordered on s2: make s2 wait for this block's stream.
      cudaEvent_t e;
      CUDA_OK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      CUDA_OK(cudaEventRecord(e, s));
      CUDA_OK(cudaStreamWaitEvent(s2, e, 0));
      CUDA_OK(cudaEventDestroy(e));
      blocks.push_back(Live{p, n, seed++, how});
    }
    for (const Live& b : blocks) {
      const Digest d = redigest(b.p, b.n, b.seed, s2);
      CHECK(d.bad == 0);
      total += d.sum;
      CUDA_OK(cudaFreeAsync(b.p, s2));
    }
    CUDA_OK(cudaDeviceSynchronize());
    std::printf("result: churn 300 steps checksum %llu\n", total);
  }

  CUDA_OK(cudaStreamDestroy(s1));
  CUDA_OK(cudaStreamDestroy(s2));
  CUDA_OK(cudaFree(g_digest_buf));
  CUDA_OK(cudaDeviceSynchronize());
  std::printf("allocations: %lu\n", g_allocations);
  return g_failures;
}

int running_free(const std::string& expect, bool blocking) {
  const bool fence = expect == "fence";
  const bool order = expect == "order";
  const double scale = std::getenv("VMM_TEST_TIME_SCALE") ? std::atof(std::getenv("VMM_TEST_TIME_SCALE")) : 1.0;
  const unsigned long long spin_ns = static_cast<unsigned long long>(400e6 * (scale > 0 ? scale : 1.0));
  const std::size_t n = 64 << 20;
  int* started = nullptr;
  CUDA_OK(cudaHostAlloc(reinterpret_cast<void**>(&started), sizeof(int), cudaHostAllocMapped));
  *started = 0;
  int* started_dev = nullptr;
  CUDA_OK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&started_dev), started, 0));
  unsigned long long* bad = static_cast<unsigned long long*>(runtime_alloc(sizeof *bad));
  CUDA_OK(cudaMemset(bad, 0, sizeof *bad));
  void* x = runtime_alloc(n);
  cudaStream_t s = nullptr;
  cudaStream_t other = nullptr;
  const unsigned flags = blocking ? cudaStreamDefault : cudaStreamNonBlocking;
  CUDA_OK(cudaStreamCreateWithFlags(&s, flags));
  CUDA_OK(cudaStreamCreateWithFlags(&other, flags));
  CUDA_OK(cudaDeviceSynchronize());

  hold<<<1, 1024, 0, s>>>(static_cast<std::uint8_t*>(x), n, spin_ns, started_dev, bad);
  const auto wait_start = std::chrono::steady_clock::now();
  while (*static_cast<volatile int*>(started) == 0 &&
         std::chrono::steady_clock::now() - wait_start < std::chrono::seconds(30)) {
  }
  CHECK(*started == 1);

  const auto t0 = std::chrono::steady_clock::now();
  CUDA_OK(cudaFree(x));
  const double free_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const bool still_running = cudaStreamQuery(s) == cudaErrorNotReady;
  // Take as much of that size as we can and overwrite it on another stream.
  bool overlap = false;
  std::vector<void*> grabbed;
  for (int i = 0; i < 4; ++i) {
    void* y = runtime_alloc(n);
    grabbed.push_back(y);
    CUDA_OK(cudaMemsetAsync(y, 0, n, other));
    const auto a = reinterpret_cast<std::uintptr_t>(x);
    const auto b = reinterpret_cast<std::uintptr_t>(y);
    overlap = overlap || (b < a + n && a < b + n);
  }
  const bool running_after_reuse = cudaStreamQuery(s) == cudaErrorNotReady;
  CUDA_OK(cudaDeviceSynchronize());
  unsigned long long host_bad = 0;
  CUDA_OK(cudaMemcpy(&host_bad, bad, sizeof host_bad, cudaMemcpyDeviceToHost));
  std::printf("info: cudaFree took %.3f ms with %.0f ms of kernel left; kernel still running "
              "after it: %s; new allocations overlapping the freed block: %s\n",
              free_ms, spin_ns / 1e6, still_running ? "yes" : "no", overlap ? "yes" : "no");
  std::printf("result: running-free mismatches %llu\n", host_bad);
  CHECK(host_bad == 0);
  if (fence) {
    // Returned at once, while the kernel ran; nothing it used went elsewhere.
    CHECK(still_running);
    CHECK(free_ms < spin_ns / 2e6);
    if (running_after_reuse) CHECK(!overlap);
  } else if (order) {
    // Returned at once, and the memory went straight back out: the
    // memsets on the other stream waited for the kernel on the GPU (the
    // kernel saw no byte of its buffer change: host_bad above).
    CHECK(still_running);
    CHECK(free_ms < spin_ns / 2e6);
    CHECK(overlap);
  } else {
    // CUDA's behaviour: the free waited for the kernel.
    CHECK(!still_running);
    CHECK(free_ms > spin_ns / 4e6);
  }
  for (void* y : grabbed) CUDA_OK(cudaFree(y));
  CUDA_OK(cudaFree(bad));
  CUDA_OK(cudaFreeHost(started));
  CUDA_OK(cudaStreamDestroy(s));
  CUDA_OK(cudaStreamDestroy(other));
  std::printf("allocations: %lu\n", g_allocations);
  return g_failures;
}

int reset() {
  g_digest_buf = static_cast<unsigned long long*>(runtime_alloc(2 * sizeof(unsigned long long)));
  void* p = runtime_alloc(1 << 20);
  result("before reset cudaMalloc", 1 << 20, fill_and_digest(p, 1 << 20, 7, nullptr));
  void* q = nullptr;
  CUDA_OK(cudaMallocAsync(&q, 1 << 20, nullptr));
  ++g_allocations;
  result("before reset cudaMallocAsync", 1 << 20, fill_and_digest(q, 1 << 20, 8, nullptr));
  CUDA_OK(cudaDeviceReset());
  // The reset freed p and the digest buffer; q is not freed by a reset.
  g_digest_buf = static_cast<unsigned long long*>(runtime_alloc(2 * sizeof(unsigned long long)));
  for (std::size_t n : kSizes) {
    void* r = runtime_alloc(n);
    result("after reset cudaMalloc", n, fill_and_digest(r, n, 9, nullptr));
    CUDA_OK(cudaFree(r));
    void* a = nullptr;
    CUDA_OK(cudaMallocAsync(&a, n, nullptr));
    ++g_allocations;
    result("after reset cudaMallocAsync", n, fill_and_digest(a, n, 10, nullptr));
    CUDA_OK(cudaFreeAsync(a, nullptr));
  }
  CUDA_OK(cudaFreeAsync(q, nullptr));
  CUDA_OK(cudaFree(g_digest_buf));
  CUDA_OK(cudaDeviceSynchronize());
  // A second reset, at exit, as many programs do.
  CUDA_OK(cudaDeviceReset());
  std::printf("allocations: %lu\n", g_allocations);
  return g_failures;
}

int misuse() {
  void* p = runtime_alloc(4096);
  CUDA_OK(cudaFree(p));
  const cudaError_t twice = cudaFree(p);
  std::printf("result: double cudaFree -> %s\n", cudaGetErrorName(twice));
  CHECK(twice == cudaErrorInvalidValue);
  (void)cudaGetLastError();  // not sticky; cleared so later checks see their own
  CUDA_OK(cudaFree(nullptr));
  std::printf("result: cudaFree(NULL) -> cudaSuccess\n");

  const Driver drv = load_driver();
  CUdeviceptr d = 0;
  CU_OK(drv.MemAlloc(&d, 4096));
  ++g_allocations;
  CU_OK(drv.MemFree(d));
  const CUresult d_twice = drv.MemFree(d);
  std::printf("result: double cuMemFree -> %d\n", static_cast<int>(d_twice));
  CHECK(d_twice == CUDA_ERROR_INVALID_VALUE);
  (void)cudaGetLastError();

  // Memory the interposer never handed out: managed and pool allocations.
  void* managed = nullptr;
  CUDA_OK(cudaMallocManaged(&managed, 4096));
  std::memset(managed, 1, 4096);
  CUDA_OK(cudaFree(managed));
  std::printf("result: managed memory freed with cudaFree\n");
  cudaMemPool_t pool = nullptr;
  int device = 0;
  CUDA_OK(cudaGetDevice(&device));
  CUDA_OK(cudaDeviceGetDefaultMemPool(&pool, device));
  void* from_pool = nullptr;
  CUDA_OK(cudaMallocFromPoolAsync(&from_pool, 1 << 20, pool, nullptr));
  CUDA_OK(cudaMemsetAsync(from_pool, 0, 1 << 20, nullptr));
  CUDA_OK(cudaFreeAsync(from_pool, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::printf("result: pool allocation freed with cudaFreeAsync\n");
  std::printf("allocations: %lu\n", g_allocations);
  return g_failures;
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 1) {
    std::printf("no GPU: skipped\n");
    return 77;
  }
  const std::string mode = argc > 1 ? argv[1] : "";
  int failures = -1;
  if (mode == "workload") failures = workload();
  if (mode == "running-free" && argc > 2) {
    failures = running_free(argv[2], argc > 3 && std::string(argv[3]) == "blocking");
  }
  if (mode == "reset") failures = reset();
  if (mode == "misuse") failures = misuse();
  if (failures < 0) {
    std::fprintf(stderr, "usage: preload_check workload|running-free fence|sync|order [blocking]|reset|"
                 "misuse\n");
    return 2;
  }
  std::printf("%s: %s\n", mode.c_str(), failures == 0 ? "all checks passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
