// The replaced CUDA runtime entry points, for programs that use the shared
// runtime (libcudart.so: PyTorch, CuPy's wheels, nvcc -cudart shared). An
// unversioned definition here is bound before libcudart's versioned one
// (cudaMalloc@libcudart.so.13). Programs built with the static runtime
// carry their own copies, which these never see: those reach vmmalloc
// through the driver entry points (driver_hooks.cpp), as does everything
// the shared runtime does internally (cudaStreamCreate, cudaDeviceReset).
//
// cudaMallocFromPoolAsync is not replaced: a pool's allocations follow
// that pool's attributes (location, release threshold, IPC), which vmmalloc
// cannot honour; they and their frees go to CUDA (a free finds the pointer
// is not vmmalloc's). cudaMemGetInfo is not replaced either: it keeps
// reporting the device's real free memory, in which memory vmmalloc holds
// (in use or cached) counts as used.
//
// Each replacement forwards untouched what is not vmmalloc's (see
// driver_hooks.cpp for the list) and never lets an exception escape.
#include <cuda_runtime_api.h>

#include <dlfcn.h>

#include <atomic>

#include "preload/driver_calls.hpp"
#include "preload/driver_entry_points.hpp"
#include "preload/interposer.hpp"
#include "preload/real_dlsym.hpp"

namespace vmm::preload {
namespace {

// The runtime library the interposer's lookups found (kept loaded: the
// program loaded it), so every runtime function comes from the same one.
std::atomic<void*> g_runtime_library{nullptr};

void remember_runtime_library(void* fn) noexcept {
  if (g_runtime_library.load(std::memory_order_acquire) != nullptr) return;
  Dl_info info{};
  if (dladdr(fn, &info) == 0 || info.dli_fname == nullptr) return;
  void* lib = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  void* expected = nullptr;
  if (lib != nullptr && !g_runtime_library.compare_exchange_strong(expected, lib)) dlclose(lib);
}

// The runtime's own function `name`: the next definition after the
// interposer; or, when the runtime is not in the global scope (a Python
// extension module loaded with RTLD_LOCAL links it, as CuPy's do), the one
// of the runtime library found before, the one the caller's library sees, or
// that of a loaded libcudart. Never the interposer's own (`self`). Looked up
// once.
template <typename Fn>
Fn real_runtime(std::atomic<void*>& slot, const char* name, void* self,
                const void* caller) noexcept {
  void* fn = slot.load(std::memory_order_acquire);
  if (fn != nullptr) return reinterpret_cast<Fn>(fn);
  auto usable = [self](void* f) { return f != nullptr && f != self; };
  fn = real_dlsym(RTLD_NEXT, name);
  if (!usable(fn)) {
    if (void* lib = g_runtime_library.load(std::memory_order_acquire)) fn = real_dlsym(lib, name);
  }
  if (!usable(fn) && caller != nullptr) {
    Dl_info info{};
    if (dladdr(caller, &info) != 0 && info.dli_fname != nullptr) {
      if (void* lib = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD)) {
        fn = real_dlsym(lib, name);  // the caller's library and its dependencies
        dlclose(lib);
      }
    }
  }
  for (const char* soname : {"libcudart.so.13", "libcudart.so.12", "libcudart.so"}) {
    if (usable(fn)) break;
    if (void* lib = dlopen(soname, RTLD_NOW | RTLD_NOLOAD)) {
      fn = real_dlsym(lib, name);
      dlclose(lib);
    }
  }
  if (!usable(fn)) return nullptr;
  remember_runtime_library(fn);
  slot.store(fn, std::memory_order_release);
  return reinterpret_cast<Fn>(fn);
}

void* function_address(std::nullptr_t) noexcept { return nullptr; }
template <typename Fn>
void* function_address(Fn* fn) noexcept {
  return reinterpret_cast<void*>(fn);
}

using MallocFn = cudaError_t (*)(void**, size_t);
using FreeFn = cudaError_t (*)(void*);
using MallocAsyncFn = cudaError_t (*)(void**, size_t, cudaStream_t);
using FreeAsyncFn = cudaError_t (*)(void*, cudaStream_t);
using GetDeviceFn = cudaError_t (*)(int*);
using SetDeviceFn = cudaError_t (*)(int);
using RuntimeVersionFn = cudaError_t (*)(int*);
using EntryPointFn = cudaError_t (*)(const char*, void**, unsigned long long,
                                     cudaDriverEntryPointQueryResult*);
using EntryPointByVersionFn = cudaError_t (*)(const char*, void**, unsigned int,
                                              unsigned long long,
                                              cudaDriverEntryPointQueryResult*);

// real_<name>(caller): the runtime's <name>; `self` is the interposer's own
// <name> where it replaces it (never the answer), else null.
#define VMM_PRELOAD_REAL(name, type, self)                                            \
  type real_##name(const void* caller = nullptr) noexcept {                           \
    static std::atomic<void*> slot{nullptr};                                          \
    return real_runtime<type>(slot, #name, function_address(self), caller);           \
  }

VMM_PRELOAD_REAL(cudaMalloc, MallocFn, &::cudaMalloc)
VMM_PRELOAD_REAL(cudaFree, FreeFn, &::cudaFree)
VMM_PRELOAD_REAL(cudaMallocAsync, MallocAsyncFn, &::cudaMallocAsync)
VMM_PRELOAD_REAL(cudaFreeAsync, FreeAsyncFn, &::cudaFreeAsync)
VMM_PRELOAD_REAL(cudaGetDevice, GetDeviceFn, nullptr)
VMM_PRELOAD_REAL(cudaSetDevice, SetDeviceFn, nullptr)
VMM_PRELOAD_REAL(cudaRuntimeGetVersion, RuntimeVersionFn, nullptr)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // replaced, not called
VMM_PRELOAD_REAL(cudaGetDriverEntryPoint, EntryPointFn, &::cudaGetDriverEntryPoint)
#pragma GCC diagnostic pop
VMM_PRELOAD_REAL(cudaGetDriverEntryPointByVersion, EntryPointByVersionFn,
                 &::cudaGetDriverEntryPointByVersion)
#undef VMM_PRELOAD_REAL

cudaError_t to_runtime(Outcome outcome) noexcept {
  switch (outcome) {
    case Outcome::served: return cudaSuccess;
    case Outcome::out_of_memory: return cudaErrorMemoryAllocation;
    case Outcome::invalid_value: return cudaErrorInvalidValue;
    case Outcome::forward: break;
  }
  return cudaErrorUnknown;
}

// The device the runtime allocates on for this thread, if vmmalloc may serve
// it: the runtime's current device, whose primary context is (or, when the
// thread has no context yet, is made, as the real cudaMalloc would) current.
// -1: the runtime failed, or another context is current.
int runtime_device() noexcept {
  GetDeviceFn get_device = real_cudaGetDevice();
  int device = -1;
  if (get_device == nullptr || get_device(&device) != cudaSuccess) return -1;
  if (!current_context_exists()) {
    // The runtime initialises the device's primary context on first use;
    // cudaSetDevice of the current device does exactly that.
    SetDeviceFn set_device = real_cudaSetDevice();
    if (set_device == nullptr || set_device(device) != cudaSuccess) return -1;
  }
  return current_primary_device() == device ? device : -1;
}

struct RuntimeStream {
  cudaStream_t stream = nullptr;  // 0: the legacy stream
  bool per_thread = false;
};

RuntimeStream resolve(cudaStream_t stream) noexcept {
  if (stream == cudaStreamPerThread) return {nullptr, true};
  if (stream == cudaStreamLegacy) return {nullptr, false};
  return {stream, false};
}

cudaError_t forward_free(FreeCall call, cudaError_t rc, void* ptr) noexcept {
  if (Interposer* ip = Interposer::existing()) {
    ip->note_forwarded(call, ptr, rc == cudaErrorInvalidValue, static_cast<int>(rc));
  }
  return rc;
}

int runtime_version() noexcept {
  RuntimeVersionFn fn = real_cudaRuntimeGetVersion();
  int version = 0;
  if (fn == nullptr || fn(&version) != cudaSuccess) version = CUDART_VERSION;
  return version;
}

}  // namespace
}  // namespace vmm::preload

using vmm::preload::AllocCall;
using vmm::preload::FreeCall;
using vmm::preload::Interposer;
using vmm::preload::Outcome;

extern "C" {

__attribute__((visibility("default"))) cudaError_t cudaMalloc(void** devPtr, size_t size) {
  auto real = vmm::preload::real_cudaMalloc(__builtin_return_address(0));
  if (real == nullptr) return cudaErrorInitializationError;
  if (devPtr == nullptr || size == 0 || Interposer::forked_child()) return real(devPtr, size);
  Interposer& ip = Interposer::get();
  const int device = vmm::preload::runtime_device();
  if (device >= 0) {
    const Outcome o = ip.allocate(AllocCall::cudaMalloc, device, size, nullptr, devPtr);
    if (o != Outcome::forward) return vmm::preload::to_runtime(o);
  }
  ip.note_forwarded(AllocCall::cudaMalloc);
  vmm::preload::RuntimeForwardScope nested;
  return real(devPtr, size);
}

__attribute__((visibility("default"))) cudaError_t cudaFree(void* devPtr) {
  auto real = vmm::preload::real_cudaFree(__builtin_return_address(0));
  if (real == nullptr) return cudaErrorInitializationError;
  Interposer* ip = Interposer::existing();
  // cudaFree(NULL) frees nothing, but programs call it to create the
  // runtime's context: CUDA does that.
  if (devPtr == nullptr || ip == nullptr || Interposer::forked_child()) return real(devPtr);
  const Outcome o = ip->free_device_ordered(FreeCall::cudaFree, devPtr);
  if (o != Outcome::forward) return vmm::preload::to_runtime(o);
  cudaError_t rc;
  {
    vmm::preload::RuntimeForwardScope nested;
    rc = real(devPtr);
  }
  return vmm::preload::forward_free(FreeCall::cudaFree, rc, devPtr);
}

__attribute__((visibility("default"))) cudaError_t cudaMallocAsync(void** devPtr, size_t size,
                                                                   cudaStream_t hStream) {
  auto real = vmm::preload::real_cudaMallocAsync(__builtin_return_address(0));
  if (real == nullptr) return cudaErrorInitializationError;
  if (devPtr == nullptr || size == 0 || Interposer::forked_child()) {
    return real(devPtr, size, hStream);
  }
  Interposer& ip = Interposer::get();
  const vmm::preload::RuntimeStream s = vmm::preload::resolve(hStream);
  if (!s.per_thread) {
    const int device = s.stream == nullptr ? vmm::preload::runtime_device()
                                           : vmm::preload::stream_primary_device(s.stream);
    if (device >= 0 && !vmm::preload::stream_capturing(s.stream)) {
      const Outcome o = ip.allocate(AllocCall::cudaMallocAsync, device, size, s.stream, devPtr);
      if (o != Outcome::forward) return vmm::preload::to_runtime(o);
    }
  }
  ip.note_forwarded(AllocCall::cudaMallocAsync);
  vmm::preload::RuntimeForwardScope nested;
  return real(devPtr, size, hStream);
}

__attribute__((visibility("default"))) cudaError_t cudaFreeAsync(void* devPtr,
                                                                 cudaStream_t hStream) {
  auto real = vmm::preload::real_cudaFreeAsync(__builtin_return_address(0));
  if (real == nullptr) return cudaErrorInitializationError;
  Interposer* ip = Interposer::existing();
  if (devPtr == nullptr || ip == nullptr || Interposer::forked_child()) {
    return real(devPtr, hStream);
  }
  if (ip->owns(devPtr)) {
    const vmm::preload::RuntimeStream s = vmm::preload::resolve(hStream);
    const bool capturing = !s.per_thread && vmm::preload::stream_capturing(s.stream);
    const Outcome o =
        ip->free_stream_ordered(FreeCall::cudaFreeAsync, devPtr, s.stream, s.per_thread, capturing);
    if (o != Outcome::forward) return vmm::preload::to_runtime(o);
  }
  cudaError_t rc;
  {
    vmm::preload::RuntimeForwardScope nested;
    rc = real(devPtr, hStream);
  }
  return vmm::preload::forward_free(FreeCall::cudaFreeAsync, rc, devPtr);
}

// The runtime's way to hand out driver entry points: with the shared
// runtime it already goes through the interposer's cuGetProcAddress; this
// also covers a runtime that took the entry point another way.
__attribute__((visibility("default"))) cudaError_t cudaGetDriverEntryPoint(
    const char* symbol, void** funcPtr, unsigned long long flags,
    cudaDriverEntryPointQueryResult* driverStatus) {
  auto real = vmm::preload::real_cudaGetDriverEntryPoint(__builtin_return_address(0));
  if (real == nullptr) return cudaErrorNotSupported;
  const cudaError_t rc = real(symbol, funcPtr, flags, driverStatus);
  if (rc == cudaSuccess && funcPtr != nullptr && !Interposer::forked_child()) {
    *funcPtr = vmm::preload::substitute_proc(symbol, vmm::preload::runtime_version(), flags,
                                             *funcPtr);
  }
  return rc;
}

__attribute__((visibility("default"))) cudaError_t cudaGetDriverEntryPointByVersion(
    const char* symbol, void** funcPtr, unsigned int cudaVersion, unsigned long long flags,
    cudaDriverEntryPointQueryResult* driverStatus) {
  auto real = vmm::preload::real_cudaGetDriverEntryPointByVersion(__builtin_return_address(0));
  if (real == nullptr) return cudaErrorNotSupported;
  const cudaError_t rc = real(symbol, funcPtr, cudaVersion, flags, driverStatus);
  if (rc == cudaSuccess && funcPtr != nullptr && !Interposer::forked_child()) {
    *funcPtr = vmm::preload::substitute_proc(symbol, static_cast<int>(cudaVersion), flags,
                                             *funcPtr);
  }
  return rc;
}

}  // extern "C"
