// The replaced CUDA driver entry points (see driver_entry_points.hpp): the
// table of real functions, the substitution rules, and the replacements.
//
// Each replacement is a hidden function (its address is what dlsym and
// cuGetProcAddress hand out, so a program that defines the same name cannot
// redirect it) with the exported driver name as an alias. Every replacement
// forwards untouched what is not vmmalloc's:
//   cuMemAlloc_v2       - outside a device's primary context, on a device
//                         vmmalloc does not serve, 0 bytes
//   cuMemAllocAsync     - those, per-thread default streams, streams being
//                         captured (they must stay graph memory nodes)
//   cuMemFree(Async)    - pointers the interposer did not hand out
// and never lets an exception escape.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <dlfcn.h>

#include <array>
#include <atomic>
#include <climits>
#include <cstring>

#include "preload/driver_calls.hpp"
#include "preload/driver_entry_points.hpp"
#include "preload/interposer.hpp"
#include "preload/log.hpp"
#include "preload/real_dlsym.hpp"

// <cuda.h> maps these names to their _v2 forms; the interposer defines both.
#undef cuGetProcAddress
#undef cuMemAlloc
#undef cuMemFree
#undef cuStreamDestroy
#undef cuDevicePrimaryCtxReset

namespace vmm::preload {
namespace {

// The toolkit whose entry point signatures the replacements were written
// against: for newer versions a variant is replaced only when the driver's
// exported function of that name is what it returned.
constexpr int kKnownCudaVersion = CUDA_VERSION;

enum class PerThread { any, legacy_only, per_thread_only };

struct EntryInfo {
  const char* exported;   // dlsym name
  const char* proc_name;  // cuGetProcAddress name
  int min_version;        // first cudaVersion that returns this variant
  int end_version;        // first cudaVersion that returns a later variant
  PerThread per_thread;
};

constexpr std::array<EntryInfo, static_cast<std::size_t>(DriverEntry::count_)> kEntries{{
    {"cuGetProcAddress", "cuGetProcAddress", 11030, 12000, PerThread::any},
    {"cuGetProcAddress_v2", "cuGetProcAddress", 12000, INT_MAX, PerThread::any},
    {"cuMemAlloc_v2", "cuMemAlloc", 3020, INT_MAX, PerThread::any},
    {"cuMemFree_v2", "cuMemFree", 3020, INT_MAX, PerThread::any},
    {"cuMemAllocAsync", "cuMemAllocAsync", 11020, INT_MAX, PerThread::legacy_only},
    {"cuMemAllocAsync_ptsz", "cuMemAllocAsync", 11020, INT_MAX, PerThread::per_thread_only},
    {"cuMemFreeAsync", "cuMemFreeAsync", 11020, INT_MAX, PerThread::legacy_only},
    {"cuMemFreeAsync_ptsz", "cuMemFreeAsync", 11020, INT_MAX, PerThread::per_thread_only},
    {"cuStreamCreate", "cuStreamCreate", 2000, INT_MAX, PerThread::any},
    {"cuStreamCreateWithPriority", "cuStreamCreateWithPriority", 5050, INT_MAX, PerThread::any},
    {"cuStreamDestroy", "cuStreamDestroy", 2000, 4000, PerThread::any},
    {"cuStreamDestroy_v2", "cuStreamDestroy", 4000, INT_MAX, PerThread::any},
    {"cuDevicePrimaryCtxReset", "cuDevicePrimaryCtxReset", 7000, 11000, PerThread::any},
    {"cuDevicePrimaryCtxReset_v2", "cuDevicePrimaryCtxReset", 11000, INT_MAX, PerThread::any},
}};

std::array<std::atomic<void*>, static_cast<std::size_t>(DriverEntry::count_)> g_real{};
std::array<void*, static_cast<std::size_t>(DriverEntry::count_)> replacement_table() noexcept;

const EntryInfo& info(DriverEntry e) noexcept { return kEntries[static_cast<std::size_t>(e)]; }

void note_real(DriverEntry e, void* fn) noexcept {
  if (fn == nullptr) return;
  void* expected = nullptr;
  // The first one wins; a later, different pointer for the same variant is
  // the same driver function reached another way.
  g_real[static_cast<std::size_t>(e)].compare_exchange_strong(expected, fn,
                                                              std::memory_order_acq_rel);
}

void* replacement(DriverEntry e) noexcept {
  static const auto table = replacement_table();
  return table[static_cast<std::size_t>(e)];
}

bool is_replacement(void* fn) noexcept {
  for (int i = 0; i < static_cast<int>(DriverEntry::count_); ++i) {
    if (replacement(static_cast<DriverEntry>(i)) == fn) return true;
  }
  return false;
}

// The driver's exported function `name`, from the library `found` lies in.
void* exported_beside(void* found, const char* name) noexcept {
  Dl_info where{};
  if (dladdr(found, &where) == 0 || where.dli_fname == nullptr) return nullptr;
  void* lib = dlopen(where.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) return nullptr;
  void* fn = real_dlsym(lib, name);
  dlclose(lib);
  return fn;
}

bool per_thread_flags(std::uint64_t flags) noexcept {
  return (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
}

// A stream argument of a stream-ordered call.
struct StreamArg {
  CUstream stream = nullptr;  // 0: the legacy stream
  bool per_thread = false;    // a per-thread default stream (not fenceable)
};

StreamArg resolve_stream(CUstream stream, bool ptsz_entry) noexcept {
  if (stream == CU_STREAM_PER_THREAD || (stream == nullptr && ptsz_entry)) return {nullptr, true};
  if (stream == CU_STREAM_LEGACY) return {nullptr, false};
  return {stream, false};
}

// The device a stream-ordered call on `s` allocates on (its primary
// context's), or -1.
int stream_device(const StreamArg& s) noexcept {
  if (s.per_thread) return -1;
  return s.stream == nullptr ? current_primary_device() : stream_primary_device(s.stream);
}

CUresult to_cuda(Outcome outcome) noexcept {
  switch (outcome) {
    case Outcome::served: return CUDA_SUCCESS;
    case Outcome::out_of_memory: return CUDA_ERROR_OUT_OF_MEMORY;
    case Outcome::invalid_value: return CUDA_ERROR_INVALID_VALUE;
    case Outcome::forward: break;
  }
  return CUDA_ERROR_UNKNOWN;
}

template <typename Fn>
Fn real(DriverEntry e) noexcept {
  return real_driver<Fn>(e);
}

CUresult forward_free(FreeCall call, CUresult rc, CUdeviceptr ptr) noexcept {
  if (Interposer* ip = Interposer::existing()) {
    ip->note_forwarded(call, reinterpret_cast<void*>(ptr), rc == CUDA_ERROR_INVALID_VALUE,
                       static_cast<int>(rc));
  }
  return rc;
}

}  // namespace

const char* driver_entry_name(DriverEntry entry) noexcept { return info(entry).exported; }

void* real_driver_entry(DriverEntry entry) noexcept {
  auto& slot = g_real[static_cast<std::size_t>(entry)];
  if (void* fn = slot.load(std::memory_order_acquire)) return fn;
  // Called by symbol (the program links libcuda): the next definition; or
  // the loaded driver's own, when it is not in the global scope.
  void* fn = real_dlsym(RTLD_NEXT, info(entry).exported);
  if (fn == nullptr || is_replacement(fn)) {
    fn = nullptr;
    if (void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD)) {
      fn = real_dlsym(lib, info(entry).exported);
      dlclose(lib);  // only drops the reference RTLD_NOLOAD took
      if (fn != nullptr && is_replacement(fn)) fn = nullptr;
    }
  }
  if (fn == nullptr) return nullptr;
  note_real(entry, fn);
  return slot.load(std::memory_order_acquire);
}

bool is_replaced_symbol(const char* name) noexcept {
  if (name[0] != 'c' || name[1] != 'u') return false;
  for (const EntryInfo& e : kEntries) {
    if (std::strcmp(name, e.exported) == 0) return true;
  }
  return false;
}

void* substitute_symbol(const char* name, void* found) noexcept {
  if (found == nullptr || is_replacement(found)) return found;
  for (int i = 0; i < static_cast<int>(DriverEntry::count_); ++i) {
    const auto e = static_cast<DriverEntry>(i);
    if (std::strcmp(name, info(e).exported) == 0) {
      note_real(e, found);
      return replacement(e);
    }
  }
  return found;
}

void* substitute_proc(const char* symbol, int cuda_version, std::uint64_t flags,
                      void* found) noexcept {
  if (symbol == nullptr || found == nullptr || is_replacement(found)) return found;
  for (int i = 0; i < static_cast<int>(DriverEntry::count_); ++i) {
    const auto e = static_cast<DriverEntry>(i);
    const EntryInfo& entry = info(e);
    if (std::strcmp(symbol, entry.proc_name) != 0) continue;
    if (cuda_version < entry.min_version || cuda_version >= entry.end_version) continue;
    if (entry.per_thread == PerThread::legacy_only && per_thread_flags(flags)) continue;
    if (entry.per_thread == PerThread::per_thread_only && !per_thread_flags(flags)) continue;
    if (cuda_version > kKnownCudaVersion && exported_beside(found, entry.exported) != found) {
      static std::atomic<bool> warned{false};
      if (!warned.exchange(true)) {
        log(LogLevel::warn, "cuGetProcAddress(%s, version %d) returned a function other than "
            "%s, which this interposer was built for (CUDA %d): not interposed", symbol,
            cuda_version, entry.exported, kKnownCudaVersion);
      }
      return found;
    }
    note_real(e, found);
    return replacement(e);
  }
  return found;
}

}  // namespace vmm::preload

// ------------------------------------------------------------ replacements

using vmm::preload::DriverEntry;
using vmm::preload::Interposer;
using vmm::preload::Outcome;

extern "C" {

#define VMM_PRELOAD_HIDDEN __attribute__((visibility("hidden")))

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuGetProcAddress_v2(const char* symbol, void** pfn,
                                                            int cuda_version, cuuint64_t flags,
                                                            CUdriverProcAddressQueryResult* status) {
  auto fn = vmm::preload::real<PFN_cuGetProcAddress_v12000>(DriverEntry::GetProcAddress_v2);
  if (fn == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  const CUresult rc = fn(symbol, pfn, cuda_version, flags, status);
  if (rc == CUDA_SUCCESS && pfn != nullptr && !Interposer::forked_child()) {
    *pfn = vmm::preload::substitute_proc(symbol, cuda_version, flags, *pfn);
  }
  return rc;
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuGetProcAddress(const char* symbol, void** pfn,
                                                         int cuda_version, cuuint64_t flags) {
  auto fn = vmm::preload::real<PFN_cuGetProcAddress_v11030>(DriverEntry::GetProcAddress);
  if (fn == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  const CUresult rc = fn(symbol, pfn, cuda_version, flags);
  if (rc == CUDA_SUCCESS && pfn != nullptr && !Interposer::forked_child()) {
    *pfn = vmm::preload::substitute_proc(symbol, cuda_version, flags, *pfn);
  }
  return rc;
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytesize) {
  auto fn = vmm::preload::real<PFN_cuMemAlloc_v3020>(DriverEntry::MemAlloc_v2);
  if (fn == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  if (dptr == nullptr || bytesize == 0 || Interposer::forked_child()) return fn(dptr, bytesize);
  Interposer& ip = Interposer::get();
  const int device = vmm::preload::current_primary_device();
  if (device >= 0) {
    void* p = nullptr;
    const Outcome o = ip.allocate(vmm::preload::AllocCall::cuMemAlloc_v2, device, bytesize,
                                  nullptr, &p);
    if (o != Outcome::forward) {
      if (o == Outcome::served) *dptr = reinterpret_cast<CUdeviceptr>(p);
      return vmm::preload::to_cuda(o);
    }
  }
  ip.note_forwarded(vmm::preload::AllocCall::cuMemAlloc_v2);
  return fn(dptr, bytesize);
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuMemFree_v2(CUdeviceptr ptr) {
  auto fn = vmm::preload::real<PFN_cuMemFree_v3020>(DriverEntry::MemFree_v2);
  if (fn == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  Interposer* ip = Interposer::existing();
  if (ptr == 0 || ip == nullptr || Interposer::forked_child()) return fn(ptr);
  const Outcome o =
      ip->free_device_ordered(vmm::preload::FreeCall::cuMemFree_v2, reinterpret_cast<void*>(ptr));
  if (o != Outcome::forward) return vmm::preload::to_cuda(o);
  return vmm::preload::forward_free(vmm::preload::FreeCall::cuMemFree_v2, fn(ptr), ptr);
}


}  // extern "C"

namespace vmm::preload {
namespace {

CUresult mem_alloc_async(PFN_cuMemAllocAsync_v11020 fn, bool ptsz, CUdeviceptr* dptr,
                         size_t bytesize, CUstream stream) noexcept {
  if (fn == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  if (dptr == nullptr || bytesize == 0 || Interposer::forked_child()) {
    return fn(dptr, bytesize, stream);
  }
  Interposer& ip = Interposer::get();
  const vmm::preload::StreamArg s = vmm::preload::resolve_stream(stream, ptsz);
  const int device = vmm::preload::stream_device(s);
  if (device >= 0 && !vmm::preload::stream_capturing(s.stream)) {
    void* p = nullptr;
    const Outcome o =
        ip.allocate(vmm::preload::AllocCall::cuMemAllocAsync, device, bytesize, s.stream, &p);
    if (o != Outcome::forward) {
      if (o == Outcome::served) *dptr = reinterpret_cast<CUdeviceptr>(p);
      return vmm::preload::to_cuda(o);
    }
  }
  ip.note_forwarded(vmm::preload::AllocCall::cuMemAllocAsync);
  return fn(dptr, bytesize, stream);
}

CUresult mem_free_async(PFN_cuMemFreeAsync_v11020 fn, bool ptsz, CUdeviceptr ptr,
                        CUstream stream) noexcept {
  if (fn == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  Interposer* ip = Interposer::existing();
  if (ptr == 0 || ip == nullptr || Interposer::forked_child()) return fn(ptr, stream);
  void* p = reinterpret_cast<void*>(ptr);
  if (ip->owns(p)) {
    const vmm::preload::StreamArg s = vmm::preload::resolve_stream(stream, ptsz);
    const bool capturing = !s.per_thread && vmm::preload::stream_capturing(s.stream);
    const Outcome o = ip->free_stream_ordered(vmm::preload::FreeCall::cuMemFreeAsync, p, s.stream,
                                              s.per_thread, capturing);
    if (o != Outcome::forward) return vmm::preload::to_cuda(o);
  }
  return vmm::preload::forward_free(vmm::preload::FreeCall::cuMemFreeAsync, fn(ptr, stream), ptr);
}

void notify_stream_created(CUresult rc, CUstream* stream, unsigned int flags) noexcept {
  if (rc != CUDA_SUCCESS || stream == nullptr || Interposer::forked_child()) return;
  Interposer::get().stream_created(*stream, vmm::preload::current_primary_device(), flags);
}

CUresult stream_destroy(PFN_cuStreamDestroy_v4000 fn, CUstream stream) noexcept {
  if (fn == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  Interposer* ip = Interposer::existing();
  if (ip == nullptr || Interposer::forked_child() || stream == nullptr) return fn(stream);
  if (ip->stream_destroying(stream, fn)) return CUDA_SUCCESS;  // destroyed with its last block
  return fn(stream);
}

CUresult primary_ctx_reset(PFN_cuDevicePrimaryCtxReset_v11000 fn, CUdevice dev) noexcept {
  if (fn == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  Interposer* ip = Interposer::existing();
  if (ip != nullptr && !Interposer::forked_child()) {
    ip->device_resetting(vmm::preload::device_ordinal(dev));
  }
  return fn(dev);
}

}  // namespace
}  // namespace vmm::preload

extern "C" {

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuMemAllocAsync(CUdeviceptr* dptr, size_t bytesize,
                                                        CUstream stream) {
  return vmm::preload::mem_alloc_async(
      vmm::preload::real<PFN_cuMemAllocAsync_v11020>(DriverEntry::MemAllocAsync), false, dptr,
      bytesize, stream);
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t bytesize,
                                                             CUstream stream) {
  return vmm::preload::mem_alloc_async(
      vmm::preload::real<PFN_cuMemAllocAsync_v11020>(DriverEntry::MemAllocAsync_ptsz), true,
      dptr, bytesize, stream);
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuMemFreeAsync(CUdeviceptr ptr, CUstream stream) {
  return vmm::preload::mem_free_async(vmm::preload::real<PFN_cuMemFreeAsync_v11020>(DriverEntry::MemFreeAsync),
                        false, ptr, stream);
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuMemFreeAsync_ptsz(CUdeviceptr ptr, CUstream stream) {
  return vmm::preload::mem_free_async(
      vmm::preload::real<PFN_cuMemFreeAsync_v11020>(DriverEntry::MemFreeAsync_ptsz), true, ptr,
      stream);
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuStreamCreate(CUstream* stream, unsigned int flags) {
  auto fn = vmm::preload::real<PFN_cuStreamCreate_v2000>(DriverEntry::StreamCreate);
  if (fn == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  const CUresult rc = fn(stream, flags);
  vmm::preload::notify_stream_created(rc, stream, flags);
  return rc;
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuStreamCreateWithPriority(CUstream* stream,
                                                                   unsigned int flags,
                                                                   int priority) {
  auto fn = vmm::preload::real<PFN_cuStreamCreateWithPriority_v5050>(
      DriverEntry::StreamCreateWithPriority);
  if (fn == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  const CUresult rc = fn(stream, flags, priority);
  vmm::preload::notify_stream_created(rc, stream, flags);
  return rc;
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuStreamDestroy(CUstream stream) {
  return vmm::preload::stream_destroy(vmm::preload::real<PFN_cuStreamDestroy_v4000>(DriverEntry::StreamDestroy),
                        stream);
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuStreamDestroy_v2(CUstream stream) {
  return vmm::preload::stream_destroy(
      vmm::preload::real<PFN_cuStreamDestroy_v4000>(DriverEntry::StreamDestroy_v2), stream);
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuDevicePrimaryCtxReset(CUdevice dev) {
  return vmm::preload::primary_ctx_reset(
      vmm::preload::real<PFN_cuDevicePrimaryCtxReset_v11000>(DriverEntry::DevicePrimaryCtxReset),
      dev);
}

VMM_PRELOAD_HIDDEN CUresult vmm_preload_cuDevicePrimaryCtxReset_v2(CUdevice dev) {
  return vmm::preload::primary_ctx_reset(vmm::preload::real<PFN_cuDevicePrimaryCtxReset_v11000>(
                               DriverEntry::DevicePrimaryCtxReset_v2),
                           dev);
}

// The exported names (what a program linked with -lcuda binds to). GCC
// finds the targets cannot throw and would have the aliases say so too,
// which <cuda.h>'s declarations of the same names do not.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-attributes"
#endif
#define VMM_PRELOAD_EXPORT(name, ret, params) \
  __attribute__((visibility("default"))) ret name params __attribute__((alias("vmm_preload_" #name)));
VMM_PRELOAD_EXPORT(cuGetProcAddress, CUresult, (const char*, void**, int, cuuint64_t))
VMM_PRELOAD_EXPORT(cuGetProcAddress_v2, CUresult,
                   (const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*))
VMM_PRELOAD_EXPORT(cuMemAlloc_v2, CUresult, (CUdeviceptr*, size_t))
VMM_PRELOAD_EXPORT(cuMemFree_v2, CUresult, (CUdeviceptr))
VMM_PRELOAD_EXPORT(cuMemAllocAsync, CUresult, (CUdeviceptr*, size_t, CUstream))
VMM_PRELOAD_EXPORT(cuMemAllocAsync_ptsz, CUresult, (CUdeviceptr*, size_t, CUstream))
VMM_PRELOAD_EXPORT(cuMemFreeAsync, CUresult, (CUdeviceptr, CUstream))
VMM_PRELOAD_EXPORT(cuMemFreeAsync_ptsz, CUresult, (CUdeviceptr, CUstream))
VMM_PRELOAD_EXPORT(cuStreamCreate, CUresult, (CUstream*, unsigned int))
VMM_PRELOAD_EXPORT(cuStreamCreateWithPriority, CUresult, (CUstream*, unsigned int, int))
VMM_PRELOAD_EXPORT(cuStreamDestroy, CUresult, (CUstream))
VMM_PRELOAD_EXPORT(cuStreamDestroy_v2, CUresult, (CUstream))
VMM_PRELOAD_EXPORT(cuDevicePrimaryCtxReset, CUresult, (CUdevice))
VMM_PRELOAD_EXPORT(cuDevicePrimaryCtxReset_v2, CUresult, (CUdevice))
#undef VMM_PRELOAD_EXPORT
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // extern "C"

namespace vmm::preload {
namespace {

std::array<void*, static_cast<std::size_t>(DriverEntry::count_)> replacement_table() noexcept {
  std::array<void*, static_cast<std::size_t>(DriverEntry::count_)> t{};
  auto set = [&](DriverEntry e, void* fn) { t[static_cast<std::size_t>(e)] = fn; };
  set(DriverEntry::GetProcAddress, reinterpret_cast<void*>(&vmm_preload_cuGetProcAddress));
  set(DriverEntry::GetProcAddress_v2, reinterpret_cast<void*>(&vmm_preload_cuGetProcAddress_v2));
  set(DriverEntry::MemAlloc_v2, reinterpret_cast<void*>(&vmm_preload_cuMemAlloc_v2));
  set(DriverEntry::MemFree_v2, reinterpret_cast<void*>(&vmm_preload_cuMemFree_v2));
  set(DriverEntry::MemAllocAsync, reinterpret_cast<void*>(&vmm_preload_cuMemAllocAsync));
  set(DriverEntry::MemAllocAsync_ptsz,
      reinterpret_cast<void*>(&vmm_preload_cuMemAllocAsync_ptsz));
  set(DriverEntry::MemFreeAsync, reinterpret_cast<void*>(&vmm_preload_cuMemFreeAsync));
  set(DriverEntry::MemFreeAsync_ptsz, reinterpret_cast<void*>(&vmm_preload_cuMemFreeAsync_ptsz));
  set(DriverEntry::StreamCreate, reinterpret_cast<void*>(&vmm_preload_cuStreamCreate));
  set(DriverEntry::StreamCreateWithPriority,
      reinterpret_cast<void*>(&vmm_preload_cuStreamCreateWithPriority));
  set(DriverEntry::StreamDestroy, reinterpret_cast<void*>(&vmm_preload_cuStreamDestroy));
  set(DriverEntry::StreamDestroy_v2, reinterpret_cast<void*>(&vmm_preload_cuStreamDestroy_v2));
  set(DriverEntry::DevicePrimaryCtxReset,
      reinterpret_cast<void*>(&vmm_preload_cuDevicePrimaryCtxReset));
  set(DriverEntry::DevicePrimaryCtxReset_v2,
      reinterpret_cast<void*>(&vmm_preload_cuDevicePrimaryCtxReset_v2));
  return t;
}

}  // namespace
}  // namespace vmm::preload
