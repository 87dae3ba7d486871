// See driver_calls.hpp.
#include "preload/driver_calls.hpp"

#include <cudaTypedefs.h>
#include <dlfcn.h>

#include <array>
#include <atomic>
#include <new>

#include "preload/driver_entry_points.hpp"
#include "preload/real_dlsym.hpp"
#include "preload/stream_registry.hpp"

namespace vmm::preload {
namespace {

// X(name, abi_version)
#define VMM_PRELOAD_DRIVER_CALLS(X)   \
  X(CtxGetCurrent, 4000)              \
  X(CtxGetDevice, 2000)               \
  X(CtxPushCurrent, 4000)             \
  X(CtxPopCurrent, 4000)              \
  X(CtxSynchronize, 2000)             \
  X(DeviceGet, 2000)                  \
  X(DeviceGetCount, 2000)             \
  X(DevicePrimaryCtxGetState, 7000)   \
  X(DevicePrimaryCtxRetain, 7000)     \
  X(EventCreate, 2000)                \
  X(EventDestroy, 4000)               \
  X(EventRecord, 2000)                \
  X(StreamWaitEvent, 3020)            \
  X(StreamGetCtx, 9020)               \
  X(StreamIsCapturing, 10000)

struct Calls {
#define VMM_PRELOAD_MEMBER(name, version) PFN_cu##name##_v##version name = nullptr;
  VMM_PRELOAD_DRIVER_CALLS(VMM_PRELOAD_MEMBER)
#undef VMM_PRELOAD_MEMBER
};

std::atomic<const Calls*> g_calls{nullptr};
std::array<std::atomic<CUcontext>, kMaxDevices> g_primary{};

// The driver's own cuGetProcAddress_v2: the one the program was handed, or
// the loaded libcuda.so.1's (never loading it).
PFN_cuGetProcAddress_v12000 driver_get_proc() noexcept {
  if (void* fn = real_driver_entry(DriverEntry::GetProcAddress_v2)) {
    return reinterpret_cast<PFN_cuGetProcAddress_v12000>(fn);
  }
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) return nullptr;
  void* fn = real_dlsym(lib, "cuGetProcAddress_v2");
  dlclose(lib);  // only drops the reference RTLD_NOLOAD took
  return reinterpret_cast<PFN_cuGetProcAddress_v12000>(fn);
}

const Calls* calls() noexcept {
  if (const Calls* c = g_calls.load(std::memory_order_acquire)) return c;
  PFN_cuGetProcAddress_v12000 get_proc = driver_get_proc();
  if (get_proc == nullptr) return nullptr;
  auto* c = new (std::nothrow) Calls();
  if (c == nullptr) return nullptr;
  bool complete = true;
#define VMM_PRELOAD_LOOKUP(name, version)                                                        \
  {                                                                                              \
    void* fn = nullptr;                                                                          \
    CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;                \
    if (get_proc("cu" #name, &fn, version, CU_GET_PROC_ADDRESS_LEGACY_STREAM, &status) ==        \
            CUDA_SUCCESS &&                                                                      \
        status == CU_GET_PROC_ADDRESS_SUCCESS && fn != nullptr) {                                \
      c->name = reinterpret_cast<PFN_cu##name##_v##version>(fn);                                 \
    } else {                                                                                     \
      complete = false;                                                                          \
    }                                                                                            \
  }
  VMM_PRELOAD_DRIVER_CALLS(VMM_PRELOAD_LOOKUP)
#undef VMM_PRELOAD_LOOKUP
  if (!complete) {
    delete c;
    return nullptr;
  }
  const Calls* expected = nullptr;
  if (!g_calls.compare_exchange_strong(expected, c, std::memory_order_acq_rel)) {
    delete c;  // another thread won; the table is the same
    return expected;
  }
  return c;
}

// The primary context of `ordinal` if it is active (retained once and kept:
// the interposer compares contexts against it for the rest of the process;
// a primary context keeps its handle across cuDevicePrimaryCtxReset).
// Never creates a context.
CUcontext primary_context(const Calls& c, int ordinal) noexcept {
  if (ordinal < 0 || ordinal >= kMaxDevices) return nullptr;
  auto& slot = g_primary[static_cast<std::size_t>(ordinal)];
  if (CUcontext ctx = slot.load(std::memory_order_acquire)) return ctx;
  CUdevice dev = 0;
  unsigned int flags = 0;
  int active = 0;
  if (c.DeviceGet(&dev, ordinal) != CUDA_SUCCESS ||
      c.DevicePrimaryCtxGetState(dev, &flags, &active) != CUDA_SUCCESS || active == 0) {
    return nullptr;
  }
  CUcontext ctx = nullptr;
  if (c.DevicePrimaryCtxRetain(&ctx, dev) != CUDA_SUCCESS || ctx == nullptr) return nullptr;
  CUcontext expected = nullptr;
  if (!slot.compare_exchange_strong(expected, ctx, std::memory_order_acq_rel)) {
    return expected;  // retained twice: harmless, the primary context lives until exit anyway
  }
  return ctx;
}

// CUdevice handles by ordinal, read once (a CUdevice is not promised to
// equal its ordinal). -2: not read yet.
std::atomic<int> g_device_count{-2};
std::array<std::atomic<CUdevice>, kMaxDevices> g_devices{};

int ordinal_of(const Calls& c, CUdevice device) noexcept {
  int count = g_device_count.load(std::memory_order_acquire);
  if (count == -2) {
    int n = 0;
    if (c.DeviceGetCount(&n) != CUDA_SUCCESS) return -1;
    n = n < kMaxDevices ? n : kMaxDevices;
    for (int ordinal = 0; ordinal < n; ++ordinal) {
      CUdevice d = 0;
      if (c.DeviceGet(&d, ordinal) != CUDA_SUCCESS) return -1;
      g_devices[static_cast<std::size_t>(ordinal)].store(d, std::memory_order_relaxed);
    }
    g_device_count.store(n, std::memory_order_release);
    count = n;
  }
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    if (g_devices[static_cast<std::size_t>(ordinal)].load(std::memory_order_relaxed) == device) {
      return ordinal;
    }
  }
  return -1;
}

}  // namespace

bool driver_known() noexcept { return calls() != nullptr; }

int device_ordinal(CUdevice device) noexcept {
  const Calls* c = calls();
  return c != nullptr ? ordinal_of(*c, device) : -1;
}

bool current_context_exists() noexcept {
  const Calls* c = calls();
  CUcontext ctx = nullptr;
  return c != nullptr && c->CtxGetCurrent(&ctx) == CUDA_SUCCESS && ctx != nullptr;
}

int current_primary_device() noexcept {
  const Calls* c = calls();
  if (c == nullptr) return -1;
  CUcontext ctx = nullptr;
  if (c->CtxGetCurrent(&ctx) != CUDA_SUCCESS || ctx == nullptr) return -1;
  CUdevice dev = 0;
  if (c->CtxGetDevice(&dev) != CUDA_SUCCESS) return -1;
  const int ordinal = ordinal_of(*c, dev);
  return ordinal >= 0 && primary_context(*c, ordinal) == ctx ? ordinal : -1;
}

int stream_primary_device(CUstream stream) noexcept {
  const Calls* c = calls();
  if (c == nullptr) return -1;
  CUcontext ctx = nullptr;
  if (c->StreamGetCtx(stream, &ctx) != CUDA_SUCCESS || ctx == nullptr) return -1;
  (void)ordinal_of(*c, 0);  // reads the device count once
  const int count = g_device_count.load(std::memory_order_acquire);
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    if (primary_context(*c, ordinal) == ctx) return ordinal;
  }
  return -1;
}

bool stream_capturing(CUstream stream) noexcept {
  const Calls* c = calls();
  if (c == nullptr) return true;
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  if (c->StreamIsCapturing(stream, &status) != CUDA_SUCCESS) return true;
  return status != CU_STREAM_CAPTURE_STATUS_NONE;
}

namespace {

// Runs body(calls) with `device`'s primary context current, then restores
// the caller's; returns body's result, or why it could not run.
template <typename Body>
CUresult in_primary_context(int device, Body&& body) noexcept {
  const Calls* c = calls();
  if (c == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
  CUcontext ctx = primary_context(*c, device);
  if (ctx == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  CUresult rc = c->CtxPushCurrent(ctx);
  if (rc != CUDA_SUCCESS) return rc;
  rc = body(*c);
  CUcontext popped = nullptr;
  (void)c->CtxPopCurrent(&popped);
  return rc;
}

// The legacy stream (0: these entry points have legacy semantics) waits on
// the GPU for the work queued on `stream` so far (a transient event).
CUresult legacy_waits_for(const Calls& c, CUstream stream) noexcept {
  CUevent event = nullptr;
  CUresult rc = c.EventCreate(&event, CU_EVENT_DISABLE_TIMING);
  if (rc != CUDA_SUCCESS) return rc;
  rc = c.EventRecord(event, stream);
  if (rc == CUDA_SUCCESS) rc = c.StreamWaitEvent(nullptr, event, 0);
  (void)c.EventDestroy(event);  // released once the wait no longer needs it
  return rc;
}

// order_all_streams' legacy-stream event per device, made on first use and
// re-recorded by every call (a wait takes the event's latest record at the
// time of the wait, so calls from several threads at once stay correct:
// each waits for a record at least as late as its own).
std::array<std::atomic<CUevent>, kMaxDevices> g_order_event{};

CUevent order_event(const Calls& c, int device) noexcept {
  auto& slot = g_order_event[static_cast<std::size_t>(device)];
  if (CUevent e = slot.load(std::memory_order_acquire)) return e;
  CUevent e = nullptr;
  if (c.EventCreate(&e, CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) return nullptr;
  CUevent expected = nullptr;
  if (!slot.compare_exchange_strong(expected, e, std::memory_order_acq_rel)) {
    (void)c.EventDestroy(e);
    return expected;
  }
  return e;
}

}  // namespace

CUresult order_legacy_after(CUstream stream, int device) noexcept {
  return in_primary_context(device, [&](const Calls& c) { return legacy_waits_for(c, stream); });
}

CUresult order_all_streams(int device, std::span<const CUstream> nonblocking) noexcept {
  if (device < 0 || device >= kMaxDevices) return CUDA_ERROR_INVALID_DEVICE;
  return in_primary_context(device, [&](const Calls& c) {
    // The legacy stream after each non-blocking stream's work so far...
    for (CUstream s : nonblocking) {
      if (const CUresult rc = legacy_waits_for(c, s); rc != CUDA_SUCCESS) return rc;
    }
    // ...and every stream's later work after the legacy stream's so far.
    CUevent e = order_event(c, device);
    if (e == nullptr) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult rc = c.EventRecord(e, nullptr);
    for (std::size_t i = 0; rc == CUDA_SUCCESS && i < nonblocking.size(); ++i) {
      rc = c.StreamWaitEvent(nonblocking[i], e, 0);
    }
    return rc;
  });
}

CUresult order_new_stream(CUstream stream, int device) noexcept {
  if (device < 0 || device >= kMaxDevices) return CUDA_ERROR_INVALID_DEVICE;
  CUevent e = g_order_event[static_cast<std::size_t>(device)].load(std::memory_order_acquire);
  if (e == nullptr) return CUDA_SUCCESS;  // no ordered free yet
  return in_primary_context(device,
                            [&](const Calls& c) { return c.StreamWaitEvent(stream, e, 0); });
}

void forget_device_events(int device) noexcept {
  if (device < 0 || device >= kMaxDevices) return;
  // Not destroyed: the reset destroys the context's events itself.
  g_order_event[static_cast<std::size_t>(device)].store(nullptr, std::memory_order_release);
}

CUresult synchronize_device(int device) noexcept {
  return in_primary_context(device, [](const Calls& c) { return c.CtxSynchronize(); });
}

}  // namespace vmm::preload
