// A fake CUDA driver (soname libcuda.so.1) for the interposer's host tests:
// just enough of the driver API for libvmmalloc_preload.so and the fake
// runtime, on host memory, with counters the tests read.
//
// Like the real driver it hands out entry points through cuGetProcAddress
// (by name, version and per-thread flag: _v2, _ptsz variants) and exports
// them by name; "device memory" is malloc'd, a free of an unknown pointer is
// CUDA_ERROR_INVALID_VALUE, streams are heap tokens. Everything runs on the
// calling thread; there is no asynchrony to wait for.
#include <cuda.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

#include "fake_cuda.h"

#undef cuGetProcAddress
#undef cuMemAlloc
#undef cuMemFree
#undef cuStreamDestroy
#undef cuDevicePrimaryCtxReset
#undef cuCtxPushCurrent
#undef cuCtxPopCurrent
#undef cuEventDestroy

namespace {

std::mutex g_mutex;
std::set<void*> g_memory;
std::set<CUstream> g_streams;
std::set<CUstream> g_capturing;
fake_cuda_counters g_counters;
int g_context_token;  // the one (primary) context
CUcontext const kContext = reinterpret_cast<CUcontext>(&g_context_token);
thread_local bool t_no_context = false;

CUresult mem_alloc(CUdeviceptr* p, size_t bytes) {
  if (p == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  void* m = std::malloc(bytes);
  if (m == nullptr) return CUDA_ERROR_OUT_OF_MEMORY;
  std::lock_guard lock(g_mutex);
  g_memory.insert(m);
  ++g_counters.allocations;
  *p = reinterpret_cast<CUdeviceptr>(m);
  return CUDA_SUCCESS;
}

CUresult mem_free(CUdeviceptr p) {
  std::lock_guard lock(g_mutex);
  auto it = g_memory.find(reinterpret_cast<void*>(p));
  if (it == g_memory.end()) {
    ++g_counters.refused_frees;
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::free(*it);
  g_memory.erase(it);
  ++g_counters.frees;
  return CUDA_SUCCESS;
}

CUresult stream_create(CUstream* s, unsigned int flags) {
  if (s == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *s = reinterpret_cast<CUstream>(new int(static_cast<int>(flags)));
  std::lock_guard lock(g_mutex);
  g_streams.insert(*s);
  ++g_counters.streams_created;
  return CUDA_SUCCESS;
}

CUresult stream_destroy(CUstream s) {
  std::lock_guard lock(g_mutex);
  if (g_streams.erase(s) == 0) return CUDA_ERROR_INVALID_HANDLE;
  delete reinterpret_cast<int*>(s);
  ++g_counters.streams_destroyed;
  return CUDA_SUCCESS;
}

bool valid_stream(CUstream s) {
  if (s == nullptr || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) return true;
  std::lock_guard lock(g_mutex);
  return g_streams.count(s) != 0;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) fake_cuda_counters fake_cuda_read_counters(void) {
  std::lock_guard lock(g_mutex);
  return g_counters;
}

__attribute__((visibility("default"))) void fake_cuda_set_capturing(CUstream s, int capturing) {
  std::lock_guard lock(g_mutex);
  if (capturing) {
    g_capturing.insert(s);
  } else {
    g_capturing.erase(s);
  }
}

__attribute__((visibility("default"))) int fake_cuda_owns(const void* p) {
  std::lock_guard lock(g_mutex);
  return g_memory.count(const_cast<void*>(p)) != 0;
}

__attribute__((visibility("default"))) void fake_cuda_set_no_context(int none) {
  t_no_context = none != 0;
}

CUresult cuInit(unsigned int) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int* v) {
  *v = CUDA_VERSION;
  return CUDA_SUCCESS;
}
CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) { return mem_alloc(p, bytes); }
CUresult cuMemFree_v2(CUdeviceptr p) { return mem_free(p); }
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, CUstream s) {
  if (!valid_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
  return mem_alloc(p, bytes);
}
CUresult cuMemAllocAsync_ptsz(CUdeviceptr* p, size_t bytes, CUstream s) {
  return cuMemAllocAsync(p, bytes, s);
}
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) {
  if (!valid_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
  return mem_free(p);
}
CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s) { return cuMemFreeAsync(p, s); }
CUresult cuStreamCreate(CUstream* s, unsigned int flags) { return stream_create(s, flags); }
CUresult cuStreamCreateWithPriority(CUstream* s, unsigned int flags, int) {
  return stream_create(s, flags);
}
CUresult cuStreamDestroy(CUstream s) { return stream_destroy(s); }
CUresult cuStreamDestroy_v2(CUstream s) { return stream_destroy(s); }
CUresult cuDevicePrimaryCtxReset(CUdevice) {
  std::lock_guard lock(g_mutex);
  ++g_counters.resets;
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxReset_v2(CUdevice d) { return cuDevicePrimaryCtxReset(d); }
CUresult cuCtxGetCurrent(CUcontext* c) {
  *c = t_no_context ? nullptr : kContext;
  return CUDA_SUCCESS;
}
CUresult cuCtxSetCurrent(CUcontext c) {
  t_no_context = c == nullptr;
  return CUDA_SUCCESS;
}
CUresult cuCtxGetDevice(CUdevice* d) {
  if (t_no_context) return CUDA_ERROR_INVALID_CONTEXT;
  *d = 0;
  return CUDA_SUCCESS;
}
CUresult cuCtxPushCurrent_v2(CUcontext) { return CUDA_SUCCESS; }
CUresult cuCtxPopCurrent_v2(CUcontext* c) {
  if (c != nullptr) *c = kContext;
  return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize() {
  std::lock_guard lock(g_mutex);
  ++g_counters.synchronizations;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *d = 0;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetCount(int* n) {
  *n = 1;
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxGetState(CUdevice, unsigned int* flags, int* active) {
  *flags = 0;
  *active = 1;
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice) {
  *c = kContext;
  return CUDA_SUCCESS;
}
CUresult cuEventCreate(CUevent* e, unsigned int) {
  *e = reinterpret_cast<CUevent>(new int(0));
  return CUDA_SUCCESS;
}
CUresult cuEventDestroy_v2(CUevent e) {
  delete reinterpret_cast<int*>(e);
  return CUDA_SUCCESS;
}
CUresult cuEventRecord(CUevent, CUstream s) {
  return valid_stream(s) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}
CUresult cuStreamWaitEvent(CUstream s, CUevent, unsigned int) {
  if (!valid_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
  std::lock_guard lock(g_mutex);
  ++g_counters.stream_waits;
  return CUDA_SUCCESS;
}
CUresult cuStreamGetCtx(CUstream s, CUcontext* c) {
  if (!valid_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
  *c = kContext;
  return CUDA_SUCCESS;
}
CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus* status) {
  std::lock_guard lock(g_mutex);
  *status = g_capturing.count(s) != 0 ? CU_STREAM_CAPTURE_STATUS_ACTIVE
                                      : CU_STREAM_CAPTURE_STATUS_NONE;
  return CUDA_SUCCESS;
}

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* status);

CUresult cuGetProcAddress(const char* symbol, void** pfn, int version, cuuint64_t flags) {
  return cuGetProcAddress_v2(symbol, pfn, version, flags, nullptr);
}

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* status) {
  {
    std::lock_guard lock(g_mutex);
    ++g_counters.proc_lookups;
  }
  const bool ptds = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
  struct Entry {
    const char* name;
    int min_version;
    void* fn;
  };
  // Later variants first: the first entry whose version fits wins.
  const Entry table[] = {
      {"cuGetProcAddress", 12000, reinterpret_cast<void*>(&cuGetProcAddress_v2)},
      {"cuGetProcAddress", 11030, reinterpret_cast<void*>(&cuGetProcAddress)},
      {"cuMemAlloc", 3020, reinterpret_cast<void*>(&cuMemAlloc_v2)},
      {"cuMemFree", 3020, reinterpret_cast<void*>(&cuMemFree_v2)},
      {"cuMemAllocAsync", 11020,
       ptds ? reinterpret_cast<void*>(&cuMemAllocAsync_ptsz)
            : reinterpret_cast<void*>(&cuMemAllocAsync)},
      {"cuMemFreeAsync", 11020,
       ptds ? reinterpret_cast<void*>(&cuMemFreeAsync_ptsz)
            : reinterpret_cast<void*>(&cuMemFreeAsync)},
      {"cuStreamCreate", 2000, reinterpret_cast<void*>(&cuStreamCreate)},
      {"cuStreamCreateWithPriority", 5050, reinterpret_cast<void*>(&cuStreamCreateWithPriority)},
      {"cuStreamDestroy", 4000, reinterpret_cast<void*>(&cuStreamDestroy_v2)},
      {"cuStreamDestroy", 2000, reinterpret_cast<void*>(&cuStreamDestroy)},
      {"cuDevicePrimaryCtxReset", 11000, reinterpret_cast<void*>(&cuDevicePrimaryCtxReset_v2)},
      {"cuDevicePrimaryCtxReset", 7000, reinterpret_cast<void*>(&cuDevicePrimaryCtxReset)},
      {"cuInit", 2000, reinterpret_cast<void*>(&cuInit)},
      {"cuDriverGetVersion", 2020, reinterpret_cast<void*>(&cuDriverGetVersion)},
      {"cuCtxGetCurrent", 4000, reinterpret_cast<void*>(&cuCtxGetCurrent)},
      {"cuCtxSetCurrent", 4000, reinterpret_cast<void*>(&cuCtxSetCurrent)},
      {"cuCtxGetDevice", 2000, reinterpret_cast<void*>(&cuCtxGetDevice)},
      {"cuCtxPushCurrent", 4000, reinterpret_cast<void*>(&cuCtxPushCurrent_v2)},
      {"cuCtxPopCurrent", 4000, reinterpret_cast<void*>(&cuCtxPopCurrent_v2)},
      {"cuCtxSynchronize", 2000, reinterpret_cast<void*>(&cuCtxSynchronize)},
      {"cuDeviceGet", 2000, reinterpret_cast<void*>(&cuDeviceGet)},
      {"cuDeviceGetCount", 2000, reinterpret_cast<void*>(&cuDeviceGetCount)},
      {"cuDevicePrimaryCtxGetState", 7000, reinterpret_cast<void*>(&cuDevicePrimaryCtxGetState)},
      {"cuDevicePrimaryCtxRetain", 7000, reinterpret_cast<void*>(&cuDevicePrimaryCtxRetain)},
      {"cuEventCreate", 2000, reinterpret_cast<void*>(&cuEventCreate)},
      {"cuEventDestroy", 4000, reinterpret_cast<void*>(&cuEventDestroy_v2)},
      {"cuEventRecord", 2000, reinterpret_cast<void*>(&cuEventRecord)},
      {"cuStreamWaitEvent", 3020, reinterpret_cast<void*>(&cuStreamWaitEvent)},
      {"cuStreamGetCtx", 9020, reinterpret_cast<void*>(&cuStreamGetCtx)},
      {"cuStreamIsCapturing", 10000, reinterpret_cast<void*>(&cuStreamIsCapturing)},
  };
  if (pfn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *pfn = nullptr;
  bool known = false;
  for (const Entry& e : table) {
    if (std::strcmp(symbol, e.name) != 0) continue;
    known = true;
    if (version >= e.min_version) {
      *pfn = e.fn;
      break;
    }
  }
  if (status != nullptr) {
    *status = *pfn != nullptr ? CU_GET_PROC_ADDRESS_SUCCESS
              : known         ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                              : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  }
  return CUDA_SUCCESS;
}

}  // extern "C"
