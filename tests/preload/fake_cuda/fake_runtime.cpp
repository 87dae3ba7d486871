// A fake CUDA runtime (libvmm_fake_cudart.so) for the interposer's host
// tests, built the way the real libcudart reaches the driver: it dlopens
// libcuda.so.1, takes cuGetProcAddress_v2 with dlsym, and fetches every
// driver entry point through it. So under the interposer it gets the
// interposer's driver functions, exactly as libcudart does, and its own
// cuda* symbols are what the interposer's runtime functions forward to.
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "fake_cuda.h"

namespace {

struct Table {
  PFN_cuGetProcAddress_v12000 GetProcAddress = nullptr;
  CUresult (*MemAlloc)(CUdeviceptr*, size_t) = nullptr;
  CUresult (*MemFree)(CUdeviceptr) = nullptr;
  CUresult (*MemAllocAsync)(CUdeviceptr*, size_t, CUstream) = nullptr;
  CUresult (*MemFreeAsync)(CUdeviceptr, CUstream) = nullptr;
  CUresult (*StreamCreate)(CUstream*, unsigned int) = nullptr;
  CUresult (*StreamDestroy)(CUstream) = nullptr;
  CUresult (*PrimaryCtxReset)(CUdevice) = nullptr;
  CUresult (*PrimaryCtxRetain)(CUcontext*, CUdevice) = nullptr;
  CUresult (*CtxSetCurrent)(CUcontext) = nullptr;
  CUresult (*CtxSynchronize)() = nullptr;
};

template <typename Fn>
void fetch(PFN_cuGetProcAddress_v12000 get, const char* name, int version, Fn& out) {
  void* fn = nullptr;
  CUdriverProcAddressQueryResult status{};
  if (get(name, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT, &status) != CUDA_SUCCESS ||
      fn == nullptr) {
    std::fprintf(stderr, "fake cudart: no %s\n", name);
    std::abort();
  }
  out = reinterpret_cast<Fn>(fn);
}

const Table& table() {
  static const Table t = [] {
    Table tb;
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      std::fprintf(stderr, "fake cudart: %s\n", dlerror());
      std::abort();
    }
    auto get = reinterpret_cast<PFN_cuGetProcAddress_v12000>(dlsym(lib, "cuGetProcAddress_v2"));
    if (get == nullptr) std::abort();
    // As libcudart does: cuGetProcAddress itself through cuGetProcAddress.
    fetch(get, "cuGetProcAddress", 12000, tb.GetProcAddress);
    fetch(tb.GetProcAddress, "cuMemAlloc", 3020, tb.MemAlloc);
    fetch(tb.GetProcAddress, "cuMemFree", 3020, tb.MemFree);
    fetch(tb.GetProcAddress, "cuMemAllocAsync", 11020, tb.MemAllocAsync);
    fetch(tb.GetProcAddress, "cuMemFreeAsync", 11020, tb.MemFreeAsync);
    fetch(tb.GetProcAddress, "cuStreamCreate", 2000, tb.StreamCreate);
    fetch(tb.GetProcAddress, "cuStreamDestroy", 4000, tb.StreamDestroy);
    fetch(tb.GetProcAddress, "cuDevicePrimaryCtxReset", 7000, tb.PrimaryCtxReset);
    fetch(tb.GetProcAddress, "cuDevicePrimaryCtxRetain", 7000, tb.PrimaryCtxRetain);
    fetch(tb.GetProcAddress, "cuCtxSetCurrent", 4000, tb.CtxSetCurrent);
    fetch(tb.GetProcAddress, "cuCtxSynchronize", 2000, tb.CtxSynchronize);
    return tb;
  }();
  return t;
}

cudaError_t rt(CUresult rc) { return static_cast<cudaError_t>(rc); }

}  // namespace

extern "C" {

cudaError_t cudaGetDevice(int* device) {
  (void)table();
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  CUcontext ctx = nullptr;
  const CUresult rc = table().PrimaryCtxRetain(&ctx, 0);
  return rc != CUDA_SUCCESS ? rt(rc) : rt(table().CtxSetCurrent(ctx));
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  return rt(table().MemAlloc(reinterpret_cast<CUdeviceptr*>(ptr), bytes));
}

cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) {
    (void)table();  // what cudaFree(0) is for: starting the runtime
    return cudaSuccess;
  }
  return rt(table().MemFree(reinterpret_cast<CUdeviceptr>(ptr)));
}

cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t stream) {
  return rt(table().MemAllocAsync(reinterpret_cast<CUdeviceptr*>(ptr), bytes, stream));
}

cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  return rt(table().MemFreeAsync(reinterpret_cast<CUdeviceptr>(ptr), stream));
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  return rt(table().StreamCreate(stream, flags));
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) { return rt(table().StreamDestroy(stream)); }

cudaError_t cudaDeviceSynchronize(void) { return rt(table().CtxSynchronize()); }

cudaError_t cudaDeviceReset(void) { return rt(table().PrimaryCtxReset(0)); }

cudaError_t cudaGetDriverEntryPoint(const char* symbol, void** fn, unsigned long long flags,
                                    cudaDriverEntryPointQueryResult* status) {
  CUdriverProcAddressQueryResult s{};
  const CUresult rc = table().GetProcAddress(symbol, fn, CUDART_VERSION, flags, &s);
  if (status != nullptr) *status = static_cast<cudaDriverEntryPointQueryResult>(s);
  return rt(rc);
}

cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** fn, unsigned int version,
                                             unsigned long long flags,
                                             cudaDriverEntryPointQueryResult* status) {
  CUdriverProcAddressQueryResult s{};
  const CUresult rc =
      table().GetProcAddress(symbol, fn, static_cast<int>(version), flags, &s);
  if (status != nullptr) *status = static_cast<cudaDriverEntryPointQueryResult>(s);
  return rt(rc);
}

int fake_cudart_internal_malloc(void** ptr, size_t bytes) {
  return static_cast<int>(table().MemAlloc(reinterpret_cast<CUdeviceptr*>(ptr), bytes));
}

int fake_cudart_internal_free(void* ptr) {
  return static_cast<int>(table().MemFree(reinterpret_cast<CUdeviceptr>(ptr)));
}

}  // extern "C"
