// The driver calls the interposer makes for itself: which device and
// context a call runs in, whether a stream is capturing, synchronizing a
// device. They go to the same driver the program uses, through its
// cuGetProcAddress_v2 (the real one), at pinned ABI versions with legacy
// default-stream semantics. Nothing here loads the driver: until the program
// has loaded it, every query answers "unknown" and the hooks forward.
//
// Thread-safety: the table is built once (the first time the driver is
// known) and immutable after; the primary-context cache is atomics.
#pragma once

#include <cuda.h>

#include <span>

namespace vmm::preload {

// CUDA's special stream handles (CU_STREAM_LEGACY, CU_STREAM_PER_THREAD;
// cudaStreamLegacy and cudaStreamPerThread are the same values).
inline const CUstream kLegacyStreamHandle = CU_STREAM_LEGACY;
inline const CUstream kPerThreadStreamHandle = CU_STREAM_PER_THREAD;

// True once the driver's entry points are known (the program loaded it).
bool driver_known() noexcept;

// Whether the calling thread has a current context (false if the driver is
// unknown).
bool current_context_exists() noexcept;
// The device ordinal of the calling thread's current context, if that
// context is the device's primary context (the one the runtime and
// vmmalloc use). -1 when there is no current context, it is another
// context (cuCtxCreate, green contexts), or the driver is unknown.
int current_primary_device() noexcept;
// The device ordinal whose primary context `stream` belongs to, or -1
// (another context, or the driver is unknown). `stream` is a real handle:
// not 0, CU_STREAM_LEGACY or CU_STREAM_PER_THREAD.
int stream_primary_device(CUstream stream) noexcept;
// The ordinal of a CUdevice handle, or -1.
int device_ordinal(CUdevice device) noexcept;
// Whether `stream` is being captured into a CUDA graph. A failed query
// answers true: the caller then forwards, which is always safe.
bool stream_capturing(CUstream stream) noexcept;
// Makes the legacy stream of `device` wait (on the GPU, the host does not
// wait) for the work queued on `stream` so far: an event recorded on
// `stream` and waited for by the legacy stream. Used before a stream is
// destroyed, so that fences on the legacy stream keep covering its last work.
CUresult order_legacy_after(CUstream stream, int device) noexcept;
// Orders every operation issued later on any stream of `device`'s primary
// context after every operation issued before the call, on the GPU (the
// host waits for nothing): the legacy stream waits for the work queued so
// far on each of `nonblocking` (an event recorded on each), then an event
// is recorded on the legacy stream - like every legacy-stream operation it
// follows the work of every blocking and per-thread default stream, and
// their later work follows it - and each of `nonblocking` waits for it.
// `nonblocking` must hold every non-blocking stream of the context that
// later work may run on, none of them capturing. cudafree:order's free.
CUresult order_all_streams(int device, std::span<const CUstream> nonblocking) noexcept;
// Makes `stream` (a non-blocking stream just created on `device`) wait on
// the GPU for the legacy-stream event of the last order_all_streams call
// there, if there was one: work on a stream made after such a free follows
// the work before the free too. CUDA_SUCCESS when there is nothing to do.
CUresult order_new_stream(CUstream stream, int device) noexcept;
// The device's context is being reset (its events destroyed): forgets the
// event order_all_streams keeps for it.
void forget_device_events(int device) noexcept;
// Waits for all work on `device` (its primary context made current for the
// call). Returns the driver's result.
CUresult synchronize_device(int device) noexcept;

}  // namespace vmm::preload
