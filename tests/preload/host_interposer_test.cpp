// The interposer on machines without a GPU: this program runs under
// LD_PRELOAD=libvmmalloc_preload.so against the fake driver and runtime
// (tests/preload/fake_cuda), with VMMALLOC_CONF=backend:host so that
// vmmalloc serves from host memory. It checks what the interposer decides:
// which calls vmmalloc serves (vmm_block_size succeeds on one of its
// blocks: the program and the interposer share libvmmalloc.so's state) and
// which reach the "driver" untouched (the fake owns the pointer).
//
//   host_interposer_test serve        everything but the modes below (cudafree:fence)
//   host_interposer_test sync         cudafree:sync synchronizes
//   host_interposer_test order        cudafree:order orders on the GPU, reuses at once
//   host_interposer_test fork         a forked child forwards and exits
//   host_interposer_test passthrough  no serving (bad config, no GPU)
//
// Exit status 0 when every check passed; each failed check is printed.
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "check.hpp"
#include "fake_cuda/fake_cuda.h"
#include "vmmalloc/vmmalloc.h"

namespace {

bool served(const void* p) {
  size_t bytes = 0;
  return vmm_block_size(p, &bytes) == VMM_SUCCESS;
}

bool in_interposer(void* fn) {
  Dl_info info{};
  return fn != nullptr && dladdr(fn, &info) != 0 && info.dli_fname != nullptr &&
         std::strstr(info.dli_fname, "libvmmalloc_preload") != nullptr;
}

template <typename Fn>
Fn proc(const char* name, int version, cuuint64_t flags = CU_GET_PROC_ADDRESS_DEFAULT) {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  auto get = reinterpret_cast<PFN_cuGetProcAddress_v12000>(dlsym(lib, "cuGetProcAddress_v2"));
  void* fn = nullptr;
  CUdriverProcAddressQueryResult status{};
  if (get == nullptr || get(name, &fn, version, flags, &status) != CUDA_SUCCESS) return nullptr;
  return reinterpret_cast<Fn>(fn);
}

void check_entry_points() {
  // dlsym on the driver's handle and the default scope both give the
  // interposer's cuGetProcAddress.
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  CHECK(lib != nullptr);
  void* by_handle = dlsym(lib, "cuGetProcAddress_v2");
  CHECK(in_interposer(by_handle));
  CHECK(by_handle == dlsym(RTLD_DEFAULT, "cuGetProcAddress_v2"));
  CHECK(in_interposer(dlsym(lib, "cuGetProcAddress")));
  CHECK(in_interposer(dlsym(lib, "cuMemAlloc_v2")));
  // Names it leaves alone come from the driver.
  CHECK(!in_interposer(dlsym(lib, "cuCtxGetCurrent")));
  CHECK(dlsym(lib, "cuNoSuchFunction") == nullptr);
  // cuGetProcAddress: every replaced variant, and only those.
  CHECK(in_interposer(proc<void*>("cuMemAlloc", 3020)));
  CHECK(in_interposer(proc<void*>("cuMemFree", 12000)));
  void* legacy = proc<void*>("cuMemAllocAsync", 11020);
  void* per_thread =
      proc<void*>("cuMemAllocAsync", 11020, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
  CHECK(in_interposer(legacy));
  CHECK(in_interposer(per_thread));
  CHECK(legacy != per_thread);
  CHECK(in_interposer(proc<void*>("cuGetProcAddress", 11030)));
  CHECK(in_interposer(proc<void*>("cuGetProcAddress", 12000)));
  CHECK(proc<void*>("cuGetProcAddress", 11030) != proc<void*>("cuGetProcAddress", 12000));
  CHECK(in_interposer(proc<void*>("cuStreamDestroy", 2000)));
  CHECK(in_interposer(proc<void*>("cuStreamDestroy", 4000)));
  CHECK(in_interposer(proc<void*>("cuDevicePrimaryCtxReset", 7000)));
  CHECK(in_interposer(proc<void*>("cuDevicePrimaryCtxReset", 11000)));
  CHECK(!in_interposer(proc<void*>("cuCtxSynchronize", 2000)));
  // The four-argument cuGetProcAddress hands out replacements too.
  auto get_v1 = proc<PFN_cuGetProcAddress_v11030>("cuGetProcAddress", 11030);
  void* fn = nullptr;
  CHECK(get_v1 != nullptr && get_v1("cuMemFree", &fn, 3020, 0) == CUDA_SUCCESS);
  CHECK(in_interposer(fn));
  // The runtime's entry point queries.
  fn = nullptr;
  CHECK(cudaGetDriverEntryPointByVersion("cuMemAllocAsync", &fn, 12000,
                                         cudaEnablePerThreadDefaultStream, nullptr) == cudaSuccess);
  CHECK(fn == per_thread);
  fn = nullptr;
  CHECK(cudaGetDriverEntryPointByVersion("cuMemAlloc", &fn, 12000, cudaEnableDefault, nullptr) ==
        cudaSuccess);
  CHECK(in_interposer(fn));
}

void check_serving() {
  const fake_cuda_counters before = fake_cuda_read_counters();
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 1000) == cudaSuccess);
  CHECK(p != nullptr && served(p) && !fake_cuda_owns(p));
  std::memset(p, 0x5a, 1000);  // host memory on the host backend
  CHECK(cudaFree(p) == cudaSuccess);
  CHECK(!served(p));
  // cudafree:fence (this case's mode) never synchronizes.
  CHECK(fake_cuda_read_counters().synchronizations == before.synchronizations);

  // A double free gets CUDA's answer (the fake refuses unknown pointers).
  CHECK(cudaFree(p) == cudaErrorInvalidValue);
  CHECK(fake_cuda_read_counters().refused_frees == before.refused_frees + 1);
  // cudaFree(NULL) reaches the runtime (it creates the context) and frees nothing.
  CHECK(cudaFree(nullptr) == cudaSuccess);

  // The static-runtime path: through the driver entry points the runtime took.
  void* q = nullptr;
  CHECK(fake_cudart_internal_malloc(&q, 3 << 20) == CUDA_SUCCESS);
  CHECK(served(q) && !fake_cuda_owns(q));
  CHECK(fake_cudart_internal_free(q) == CUDA_SUCCESS);
  CHECK(!served(q));
  // 0 bytes: CUDA's own answer.
  void* zero = reinterpret_cast<void*>(1);
  CHECK(fake_cudart_internal_malloc(&zero, 0) == CUDA_ERROR_INVALID_VALUE);

  // Sizes from 1 byte to 64 MiB, all served and writable.
  for (size_t bytes : {size_t{1}, size_t{511}, size_t{512}, size_t{4097}, size_t{1} << 20,
                       (size_t{3} << 20) + 7, size_t{64} << 20}) {
    void* b = nullptr;
    CHECK(cudaMalloc(&b, bytes) == cudaSuccess && served(b));
    if (b != nullptr) {
      std::memset(b, 1, bytes);
      CHECK(cudaFree(b) == cudaSuccess);
    }
  }

  // No current context: the driver entry point forwards.
  auto mem_alloc = proc<PFN_cuMemAlloc_v3020>("cuMemAlloc", 3020);
  auto mem_free = proc<PFN_cuMemFree_v3020>("cuMemFree", 3020);
  fake_cuda_set_no_context(1);
  CUdeviceptr foreign = 0;
  CHECK(mem_alloc(&foreign, 4096) == CUDA_SUCCESS);
  fake_cuda_set_no_context(0);
  CHECK(fake_cuda_owns(reinterpret_cast<void*>(foreign)));
  // ...and its free goes to the driver, through the runtime or the driver.
  const unsigned long frees = fake_cuda_read_counters().frees;
  CHECK(cudaFree(reinterpret_cast<void*>(foreign)) == cudaSuccess);
  CHECK(fake_cuda_read_counters().frees == frees + 1);
  CHECK(mem_alloc(&foreign, 4096) == CUDA_SUCCESS && served(reinterpret_cast<void*>(foreign)));
  CHECK(mem_free(foreign) == CUDA_SUCCESS);
  CHECK(mem_free(foreign) == CUDA_ERROR_INVALID_VALUE);  // double free, driver API
}

void check_streams() {
  cudaStream_t s = nullptr;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  // A cudaFree'd block waits for the fences of every non-blocking stream
  // (which the host backend cannot record on the fake's streams): the next
  // allocation of the same size gets other memory.
  void* p1 = nullptr;
  void* p2 = nullptr;
  CHECK(cudaMalloc(&p1, 1 << 20) == cudaSuccess);
  CHECK(cudaFree(p1) == cudaSuccess);
  CHECK(cudaMalloc(&p2, 1 << 20) == cudaSuccess);
  CHECK(p2 != p1);
  CHECK(cudaFree(p2) == cudaSuccess);

  // Stream-ordered allocations on it are served...
  void* a = nullptr;
  CHECK(cudaMallocAsync(&a, 4096, s) == cudaSuccess && served(a));
  // ...and destroying the stream while it owns a live block defers the
  // destroy until that block is freed; the legacy stream is made to wait
  // for the stream's last work at once.
  const fake_cuda_counters before = fake_cuda_read_counters();
  CHECK(cudaStreamDestroy(s) == cudaSuccess);
  CHECK(fake_cuda_read_counters().streams_destroyed == before.streams_destroyed);
  CHECK(fake_cuda_read_counters().stream_waits == before.stream_waits + 1);
  CHECK(cudaFreeAsync(a, nullptr) == cudaSuccess && !served(a));
  CHECK(fake_cuda_read_counters().streams_destroyed == before.streams_destroyed + 1);

  // Capture: allocations on a capturing stream stay CUDA's (graph memory
  // nodes); a free of vmmalloc memory in a capture keeps the block.
  cudaStream_t c = nullptr;
  CHECK(cudaStreamCreateWithFlags(&c, cudaStreamNonBlocking) == cudaSuccess);
  void* kept = nullptr;
  CHECK(cudaMallocAsync(&kept, 256, c) == cudaSuccess && served(kept));
  fake_cuda_set_capturing(c, 1);
  void* graph_mem = nullptr;
  CHECK(cudaMallocAsync(&graph_mem, 256, c) == cudaSuccess && fake_cuda_owns(graph_mem));
  CHECK(cudaFreeAsync(graph_mem, c) == cudaSuccess && !fake_cuda_owns(graph_mem));
  CHECK(cudaFreeAsync(kept, c) == cudaSuccess);
  CHECK(served(kept));  // still allocated: never handed to other work
  fake_cuda_set_capturing(c, 0);
  CHECK(cudaStreamDestroy(c) == cudaSuccess);

  // Per-thread default streams are CUDA's.
  void* pt = nullptr;
  CHECK(cudaMallocAsync(&pt, 256, cudaStreamPerThread) == cudaSuccess && fake_cuda_owns(pt));
  CHECK(cudaFreeAsync(pt, cudaStreamPerThread) == cudaSuccess);

  // The legacy stream, under either of its names, is served.
  void* l1 = nullptr;
  void* l2 = nullptr;
  CHECK(cudaMallocAsync(&l1, 256, nullptr) == cudaSuccess && served(l1));
  CHECK(cudaMallocAsync(&l2, 256, cudaStreamLegacy) == cudaSuccess && served(l2));
  CHECK(cudaFreeAsync(l1, cudaStreamLegacy) == cudaSuccess);
  CHECK(cudaFreeAsync(l2, nullptr) == cudaSuccess);
}

void check_reset() {
  void* plain = nullptr;
  void* ordered = nullptr;
  CHECK(cudaMalloc(&plain, 8192) == cudaSuccess && served(plain));
  CHECK(cudaMallocAsync(&ordered, 8192, nullptr) == cudaSuccess && served(ordered));
  const fake_cuda_counters before = fake_cuda_read_counters();
  CHECK(cudaDeviceReset() == cudaSuccess);
  CHECK(fake_cuda_read_counters().resets == before.resets + 1);
  CHECK(fake_cuda_read_counters().synchronizations == before.synchronizations + 1);
  // The reset freed the cudaMalloc block; the stream-ordered one survives
  // it, as CUDA's do, until the program frees it.
  CHECK(!served(plain));
  CHECK(served(ordered));
  // After the reset CUDA serves the device.
  void* after = nullptr;
  CHECK(cudaMalloc(&after, 8192) == cudaSuccess && fake_cuda_owns(after));
  CHECK(cudaFree(after) == cudaSuccess);
  CHECK(cudaFreeAsync(ordered, nullptr) == cudaSuccess && !served(ordered));
}

int run_serve() {
  check_entry_points();
  check_serving();
  check_streams();
  check_reset();
  return g_failures;
}

int run_sync() {
  const fake_cuda_counters before = fake_cuda_read_counters();
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 4096) == cudaSuccess && served(p));
  CHECK(cudaFree(p) == cudaSuccess && !served(p));
  CHECK(fake_cuda_read_counters().synchronizations == before.synchronizations + 1);
  // Stream-ordered frees never synchronize.
  CHECK(cudaMallocAsync(&p, 4096, nullptr) == cudaSuccess && served(p));
  CHECK(cudaFreeAsync(p, nullptr) == cudaSuccess);
  CHECK(fake_cuda_read_counters().synchronizations == before.synchronizations + 1);
  return g_failures;
}

// One cudaFree under cudafree:order: how many stream waits it queued, and
// whether the next allocation of the same size got the freed block back.
struct FreeThenAllocate {
  unsigned long stream_waits = 0;
  bool reused = false;
};

FreeThenAllocate free_then_allocate(std::size_t bytes) {
  void* p1 = nullptr;
  void* p2 = nullptr;
  CHECK(cudaMalloc(&p1, bytes) == cudaSuccess && served(p1));
  const fake_cuda_counters before = fake_cuda_read_counters();
  CHECK(cudaFree(p1) == cudaSuccess && !served(p1));
  const fake_cuda_counters after = fake_cuda_read_counters();
  CHECK(after.synchronizations == before.synchronizations);
  CHECK(cudaMalloc(&p2, bytes) == cudaSuccess);
  CHECK(cudaFree(p2) == cudaSuccess);
  return {after.stream_waits - before.stream_waits, p2 == p1};
}

// cudafree:order: a cudaFree orders every stream's later work after all
// earlier work on the GPU (events and stream waits), so the block is
// reusable at once; a capturing non-blocking stream, or more than eight,
// falls back to the fences.
int run_order() {
  cudaStream_t s = nullptr;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  // The legacy stream waits for s, then s for the legacy stream; reused at once.
  FreeThenAllocate r = free_then_allocate(1 << 20);
  CHECK(r.stream_waits == 2);
  CHECK(r.reused);
  // A non-blocking stream made after an ordered free waits for it too; a
  // blocking one follows the legacy stream anyway.
  cudaStream_t late = nullptr;
  cudaStream_t late_blocking = nullptr;
  const fake_cuda_counters before = fake_cuda_read_counters();
  CHECK(cudaStreamCreateWithFlags(&late, cudaStreamNonBlocking) == cudaSuccess);
  CHECK(fake_cuda_read_counters().stream_waits == before.stream_waits + 1);
  CHECK(cudaStreamCreateWithFlags(&late_blocking, cudaStreamDefault) == cudaSuccess);
  CHECK(fake_cuda_read_counters().stream_waits == before.stream_waits + 1);
  CHECK(cudaStreamDestroy(late_blocking) == cudaSuccess);
  CHECK(cudaStreamDestroy(late) == cudaSuccess);

  // A capturing non-blocking stream: no event may touch it, so fences.
  fake_cuda_set_capturing(s, 1);
  r = free_then_allocate(1 << 20);
  CHECK(r.stream_waits == 0);
  CHECK(!r.reused);
  fake_cuda_set_capturing(s, 0);

  // Nine non-blocking streams: fences too (ordering would take ~6 driver
  // calls per stream at every free).
  std::vector<cudaStream_t> many(8);
  for (cudaStream_t& m : many) {
    CHECK(cudaStreamCreateWithFlags(&m, cudaStreamNonBlocking) == cudaSuccess);
  }
  r = free_then_allocate(1 << 21);
  CHECK(r.stream_waits == 0);
  CHECK(!r.reused);
  for (cudaStream_t m : many) CHECK(cudaStreamDestroy(m) == cudaSuccess);

  // Back to one: ordered again, and a blocking stream needs no wait of its
  // own (it follows the legacy stream's event).
  cudaStream_t blocking = nullptr;
  CHECK(cudaStreamCreateWithFlags(&blocking, cudaStreamDefault) == cudaSuccess);
  r = free_then_allocate(1 << 22);
  CHECK(r.stream_waits == 2);
  CHECK(r.reused);
  CHECK(cudaStreamDestroy(blocking) == cudaSuccess);
  CHECK(cudaStreamDestroy(s) == cudaSuccess);
  return g_failures;
}

int run_fork() {
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 4096) == cudaSuccess && served(p));
  const pid_t child = fork();
  if (child == 0) {
    // The child cannot use the parent's CUDA state: every call goes to CUDA
    // (here the fake), and exit() must not hang on the parent's threads.
    void* q = nullptr;
    CHECK(cudaMalloc(&q, 4096) == cudaSuccess && fake_cuda_owns(q));
    CHECK(cudaFree(q) == cudaSuccess);
    CHECK(cudaFree(p) == cudaErrorInvalidValue);  // the driver does not know it
    std::exit(g_failures == 0 ? 0 : 1);
  }
  CHECK(child > 0);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // The parent goes on as before.
  CHECK(cudaFree(p) == cudaSuccess && !served(p));
  void* r = nullptr;
  CHECK(cudaMalloc(&r, 4096) == cudaSuccess && served(r));
  CHECK(cudaFree(r) == cudaSuccess);
  return g_failures;
}

int run_passthrough() {
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 4096) == cudaSuccess && fake_cuda_owns(p) && !served(p));
  CHECK(cudaFree(p) == cudaSuccess && !fake_cuda_owns(p));
  CHECK(cudaMallocAsync(&p, 4096, nullptr) == cudaSuccess && fake_cuda_owns(p));
  CHECK(cudaFreeAsync(p, nullptr) == cudaSuccess);
  return g_failures;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (std::getenv("LD_PRELOAD") == nullptr ||
      std::strstr(std::getenv("LD_PRELOAD"), "vmmalloc_preload") == nullptr) {
    std::fprintf(stderr, "run me with LD_PRELOAD=libvmmalloc_preload.so\n");
    return 2;
  }
  int failures = -1;
  if (mode == "serve") failures = run_serve();
  if (mode == "sync") failures = run_sync();
  if (mode == "order") failures = run_order();
  if (mode == "fork") failures = run_fork();
  if (mode == "passthrough") failures = run_passthrough();
  if (failures < 0) {
    std::fprintf(stderr, "usage: host_interposer_test serve|sync|order|fork|passthrough\n");
    return 2;
  }
  std::printf("%s: %s\n", mode.c_str(), failures == 0 ? "all checks passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
