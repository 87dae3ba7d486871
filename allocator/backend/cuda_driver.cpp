// Run-time loading of the CUDA driver (see cuda_driver.hpp).
//
// Thread-safety: the table is built once inside a function-local static's
// initialiser (the C++ runtime serialises it); afterwards it is read-only.
// The library handle is never dlclose'd: cuInit starts driver threads, and
// other code in the process (cudart, PyTorch) shares the same handle.
#include "allocator/backend/cuda_driver.hpp"

#include <dlfcn.h>

#include <new>
#include <string>

#include "vmmalloc/errors.hpp"

namespace vmm::cuda {
namespace {

std::string describe_with(const Driver* d, CUresult result) {
  const char* name = nullptr;
  const char* text = nullptr;
  if (d != nullptr) {
    // Both leave the pointer null (and return CUDA_ERROR_INVALID_VALUE) for
    // a code the driver does not know.
    if (d->GetErrorName(result, &name) != CUDA_SUCCESS) name = nullptr;
    if (d->GetErrorString(result, &text) != CUDA_SUCCESS) text = nullptr;
  }
  std::string out = name != nullptr ? name : "CUDA error";
  out += " (" + std::to_string(static_cast<int>(result)) + ")";
  if (text != nullptr) {
    out += ": ";
    out += text;
  }
  return out;
}

LoadResult load_once() {
  LoadResult result;
  dlerror();  // clear any stale error
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    result.error = std::string("libcuda.so.1 could not be loaded (") +
                   (why != nullptr ? why : "unknown reason") + ")";
    return result;
  }
  // cuGetProcAddress is a macro for cuGetProcAddress_v2 in CUDA 12+ headers;
  // the exported symbol is the _v2 one (absent from drivers before 12.0).
  auto get_proc = reinterpret_cast<PFN_cuGetProcAddress_v12000>(dlsym(lib, "cuGetProcAddress_v2"));
  if (get_proc == nullptr) {
    result.error =
        "the CUDA driver is too old: libcuda.so.1 has no cuGetProcAddress_v2 "
        "(a driver for CUDA 12.0 or later is needed)";
    return result;
  }

  auto* d = new Driver();  // lives until exit (see the file comment)
  const auto flags = static_cast<cuuint64_t>(CU_GET_PROC_ADDRESS_LEGACY_STREAM);
#define VMM_CUDA_DRIVER_LOOKUP(name, version, required)                                 \
  {                                                                                     \
    void* fn = nullptr;                                                                 \
    CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;       \
    const CUresult rc = get_proc("cu" #name, &fn, version, flags, &status);             \
    if (rc == CUDA_SUCCESS && status == CU_GET_PROC_ADDRESS_SUCCESS && fn != nullptr) { \
      d->name = reinterpret_cast<PFN_cu##name##_v##version>(fn);                        \
    } else if (required) {                                                              \
      result.error = "the CUDA driver lacks cu" #name " (ABI version " #version         \
                     "): cuGetProcAddress returned " +                                  \
                     std::to_string(static_cast<int>(rc)) + ", status " +               \
                     std::to_string(static_cast<int>(status));                          \
      delete d;                                                                         \
      return result;                                                                    \
    }                                                                                   \
  }
  VMM_CUDA_DRIVER_ENTRY_POINTS(VMM_CUDA_DRIVER_LOOKUP)
#undef VMM_CUDA_DRIVER_LOOKUP

  CUresult rc = d->Init(0);
  if (rc != CUDA_SUCCESS) {
    result.error = "cuInit failed: " + describe_with(d, rc);
    delete d;
    return result;
  }
  rc = d->DriverGetVersion(&d->driver_version);
  if (rc != CUDA_SUCCESS) {
    result.error = "cuDriverGetVersion failed: " + describe_with(d, rc);
    delete d;
    return result;
  }
  rc = d->DeviceGetCount(&d->device_count);
  if (rc != CUDA_SUCCESS) {
    result.error = "cuDeviceGetCount failed: " + describe_with(d, rc);
    delete d;
    return result;
  }
  if (d->device_count < 1) {
    result.error = "the CUDA driver reports no devices";
    delete d;
    return result;
  }
  result.driver = d;
  return result;
}

}  // namespace

const LoadResult& load() noexcept {
  // Leaked on purpose: allocator state torn down during static destruction
  // may still need the table.
  static const LoadResult* const result = []() noexcept -> const LoadResult* {
    try {
      return new LoadResult(load_once());
    } catch (...) {  // std::bad_alloc: report "unusable" rather than terminate
      // Placement-new into static storage: never destroyed, cannot throw.
      alignas(LoadResult) static unsigned char storage[sizeof(LoadResult)];
      return new (storage) LoadResult();
    }
  }();
  return *result;
}

const Driver& driver() {
  const LoadResult& loaded = load();
  if (loaded.driver == nullptr) {
    throw NotSupportedError(
        "the CUDA driver is not usable: " +
        (loaded.error.empty() ? std::string("out of memory while loading it") : loaded.error));
  }
  return *loaded.driver;
}

const char* error_name(CUresult result) noexcept {
  const Driver* d = load().driver;
  const char* name = nullptr;
  if (d == nullptr || d->GetErrorName(result, &name) != CUDA_SUCCESS || name == nullptr) {
    return "CUDA error";
  }
  return name;
}

std::string describe(CUresult result) { return describe_with(load().driver, result); }

void check(CUresult result, const char* call) {
  if (result == CUDA_SUCCESS) return;
  const std::string message = std::string(call) + " failed: " + describe(result);
  if (result == CUDA_ERROR_OUT_OF_MEMORY) {
    throw DeviceOutOfMemoryError(call, static_cast<int>(result), message);
  }
  throw DriverError(call, static_cast<int>(result), message);
}

}  // namespace vmm::cuda
