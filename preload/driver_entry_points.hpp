// The CUDA driver entry points the interposer replaces, and the real ones
// behind them.
//
// A program reaches the driver in three ways, and each is covered:
//   - by symbol, when linked with -lcuda: the interposer exports the same
//     names (cuMemAlloc_v2, ...), which the dynamic linker binds first;
//   - by dlsym on the libcuda handle (libcudart and most frameworks):
//     dlsym_hook.cpp hands out the interposer's function for these names
//     (substitute_symbol);
//   - by cuGetProcAddress (libcudart, static or shared, fetches every other
//     entry point this way) and cudaGetDriverEntryPoint(ByVersion): the
//     interposer's cuGetProcAddress hands out its own functions for these
//     names (substitute_proc).
// The real function behind each replaced one is the first the program was
// handed for it (by the driver's cuGetProcAddress or dlsym), or else the next
// definition after the interposer (dlsym(RTLD_NEXT)).
//
// Thread-safety: lock-free; the real pointers are atomics set at most once.
#pragma once

#include <cstdint>

namespace vmm::preload {

// Members are the driver names without "cu": <cuda.h> #defines several
// cu* names to their _v2 forms.
enum class DriverEntry : int {
  GetProcAddress,  // the CUDA 11 four-argument form
  GetProcAddress_v2,
  MemAlloc_v2,
  MemFree_v2,
  MemAllocAsync,
  MemAllocAsync_ptsz,  // stream 0 is the per-thread default stream
  MemFreeAsync,
  MemFreeAsync_ptsz,
  StreamCreate,
  StreamCreateWithPriority,
  StreamDestroy,
  StreamDestroy_v2,
  DevicePrimaryCtxReset,
  DevicePrimaryCtxReset_v2,
  count_
};

// "cuMemAlloc_v2": the exported name.
const char* driver_entry_name(DriverEntry entry) noexcept;

// The real function behind `entry`, or null if the driver has none.
void* real_driver_entry(DriverEntry entry) noexcept;
template <typename Fn>
Fn real_driver(DriverEntry entry) noexcept {
  return reinterpret_cast<Fn>(real_driver_entry(entry));
}

// Cheap test of a dlsym name: false for every name the interposer leaves alone.
bool is_replaced_symbol(const char* name) noexcept;
// dlsym(handle, name) found `found`: the interposer's function for `name`
// (noting `found` as the real one) if it replaces it, else `found`.
void* substitute_symbol(const char* name, void* found) noexcept;
// cuGetProcAddress(symbol, ..., cuda_version, flags) returned `found`: the
// interposer's function when `found` is a variant it replaces (decided by the
// name, version and per-thread flag as the driver documents them, and for
// versions newer than the toolkit vmmalloc was built with, only when `found`
// is the driver's exported function of that name), else `found`.
void* substitute_proc(const char* symbol, int cuda_version, std::uint64_t flags,
                      void* found) noexcept;

}  // namespace vmm::preload
