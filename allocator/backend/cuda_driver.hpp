// The CUDA driver, loaded at run time.
//
// vmmalloc never links libcuda: machines without a GPU have no libcuda.so.1
// (only the toolkit's link stub), and a binary linked to it would not even
// start there. Instead load() dlopens libcuda.so.1, takes cuGetProcAddress_v2
// with dlsym, and fetches every other entry point through it.
//
// Each entry point is requested at a PINNED ABI version and typed with the
// matching PFN_<name>_v<version> typedef of <cudaTypedefs.h>, so the pointer
// type and the function the driver returns cannot drift apart. Asking for
// everything at CUDA_VERSION would be wrong: at 13000 the driver returns the
// two-argument cuCtxGetDevice_v2 for "cuCtxGetDevice", while <cuda.h>'s
// cuCtxGetDevice takes one. Pinned versions also make drivers older than the
// toolkit work (any CUDA 12.0+ driver has everything needed here).
// Entry points are looked up with CU_GET_PROC_ADDRESS_LEGACY_STREAM so that
// stream 0 means the legacy default stream, as the Backend contract says,
// whatever the compile flags of the including code.
//
// Members are named after the driver function without its "cu" prefix
// (MemMap for cuMemMap): <cuda.h> #defines many cu* names to _v2/_ptsz
// variants, which would silently rename members differently per translation
// unit.
//
// Thread-safety: load() runs once (a function-local static, initialised
// under the C++ runtime's lock); the table is immutable afterwards and never
// destroyed, so it stays valid during static destruction at exit.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>

#include <string>

namespace vmm::cuda {

// X(name, abi_version, required): every entry point vmmalloc uses.
// Optional ones (required = false) are null where the driver lacks them.
#define VMM_CUDA_DRIVER_ENTRY_POINTS(X)           \
  X(Init, 2000, true)                             \
  X(DriverGetVersion, 2020, true)                 \
  X(GetErrorName, 6000, true)                     \
  X(GetErrorString, 6000, true)                   \
  X(DeviceGet, 2000, true)                        \
  X(DeviceGetCount, 2000, true)                   \
  X(DeviceGetAttribute, 2000, true)               \
  X(DeviceCanAccessPeer, 4000, true)              \
  X(DevicePrimaryCtxRetain, 7000, true)           \
  X(DevicePrimaryCtxRelease, 11000, true)         \
  X(CtxGetCurrent, 4000, true)                    \
  X(CtxSetCurrent, 4000, true)                    \
  X(CtxGetDevice, 2000, true)                     \
  X(CtxSynchronize, 2000, true)                   \
  X(MemGetInfo, 3020, true)                       \
  X(MemGetAllocationGranularity, 10020, true)     \
  X(MemAddressReserve, 10020, true)               \
  X(MemAddressFree, 10020, true)                  \
  X(MemCreate, 10020, true)                       \
  X(MemRelease, 10020, true)                      \
  X(MemMap, 10020, true)                          \
  X(MemUnmap, 10020, true)                        \
  X(MemSetAccess, 10020, true)                    \
  X(MemExportToShareableHandle, 10020, true)      \
  X(MemImportFromShareableHandle, 10020, true)    \
  X(EventCreate, 2000, true)                      \
  X(EventRecord, 2000, true)                      \
  X(EventQuery, 2000, true)                       \
  X(EventSynchronize, 2000, true)                 \
  X(EventDestroy, 4000, true)                     \
  X(ThreadExchangeStreamCaptureMode, 10010, true) \
  X(StreamIsCapturing, 10000, true)               \
  X(StreamCreate, 2000, true)                     \
  X(StreamDestroy, 4000, true)                    \
  X(MemcpyAsync, 4000, true)                      \
  X(MemHostAlloc, 2020, true)                     \
  X(MemFreeHost, 2000, true)                      \
  X(StreamGetCaptureInfo, 12030, false)

struct Driver {
#define VMM_CUDA_DRIVER_MEMBER(name, version, required) PFN_cu##name##_v##version name = nullptr;
  VMM_CUDA_DRIVER_ENTRY_POINTS(VMM_CUDA_DRIVER_MEMBER)
#undef VMM_CUDA_DRIVER_MEMBER

  int driver_version = 0;  // cuDriverGetVersion: 13000 for CUDA 13.0
  int device_count = 0;    // at load time; >= 1
};

struct LoadResult {
  const Driver* driver = nullptr;  // null if the driver is unusable
  std::string error;               // why, when driver is null
};

// Loads the driver once per process: dlopen, entry points, cuInit(0), device
// count. Never throws; on failure the result says why ("libcuda.so.1 not
// found: ...", "cuInit failed: CUDA_ERROR_NO_DEVICE (100): ...", "no CUDA
// devices"). Later calls return the same result.
const LoadResult& load() noexcept;

// The loaded driver. Throws NotSupportedError carrying load()'s reason.
const Driver& driver();

// "CUDA_ERROR_INVALID_VALUE (1): invalid argument" (just the number where
// the driver did not load). Throws only std::bad_alloc.
std::string describe(CUresult result);

// "CUDA_ERROR_DEINITIALIZED", or "CUDA error" for a code the driver does
// not name (or when it did not load). Never throws; for destructors.
const char* error_name(CUresult result) noexcept;

// Throws for anything but CUDA_SUCCESS: DeviceOutOfMemoryError for
// CUDA_ERROR_OUT_OF_MEMORY, DriverError otherwise, with the message
// "<call> failed: <describe(result)>" and code() = result.
void check(CUresult result, const char* call);

}  // namespace vmm::cuda
