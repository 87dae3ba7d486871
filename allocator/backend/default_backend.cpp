// The default backend choice (see default_backend.hpp): CudaBackend where the
// driver loads and reports a device, HostBackend otherwise, unless
// Config::backend forces one. The choice is logged once per process, with
// the reason, at info level.
//
// Thread-safety: the driver table is loaded once (cuda_driver.cpp); the
// choice is a pure function of the config and that table; the one-time log
// is guarded by a std::once_flag.
#include "allocator/backend/default_backend.hpp"

#include <mutex>
#include <string>

#include "allocator/backend/cuda_backend.hpp"
#include "allocator/backend/cuda_driver.hpp"
#include "allocator/backend/host_backend.hpp"
#include "allocator/base/log.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {
namespace {

// The driver table to use, or null for the host backend. Throws ConfigError
// when backend:cuda is forced and the driver is unusable.
const cuda::Driver* chosen_driver(const Config& config) {
  if (config.backend == BackendKind::host) return nullptr;
  const cuda::LoadResult& loaded = cuda::load();
  if (loaded.driver == nullptr && config.backend == BackendKind::cuda) {
    throw ConfigError("backend", "backend:cuda is set but no GPU is usable: " + loaded.error +
                                     "; backend:auto or backend:host run without one");
  }
  return loaded.driver;
}

void log_choice_once(const Config& config, const cuda::Driver* driver) {
  static std::once_flag once;
  std::call_once(once, [&] {
    if (driver != nullptr) {
      log(LogLevel::info, "using the cuda backend: CUDA driver %d.%d, %d device(s)",
          driver->driver_version / 1000, driver->driver_version % 1000 / 10, driver->device_count);
    } else if (config.backend == BackendKind::host) {
      log(LogLevel::info, "using the host backend: forced by the configuration (backend:host)");
    } else {
      log(LogLevel::info, "using the host backend: no usable GPU (%s)", cuda::load().error.c_str());
    }
  });
}

}  // namespace

int default_backend_device_count(const Config& config) {
  const cuda::Driver* driver = chosen_driver(config);
  return driver != nullptr ? driver->device_count : 1;
}

int default_backend_current_device(const Config& config) {
  const cuda::Driver* driver = chosen_driver(config);
  if (driver == nullptr) return 0;
  CUcontext context = nullptr;
  cuda::check(driver->CtxGetCurrent(&context), "cuCtxGetCurrent");
  if (context == nullptr) return 0;
  CUdevice current = 0;
  cuda::check(driver->CtxGetDevice(&current), "cuCtxGetDevice");
  // A CUdevice is not promised to equal its ordinal: map it back.
  for (int ordinal = 0; ordinal < driver->device_count; ++ordinal) {
    CUdevice device = 0;
    cuda::check(driver->DeviceGet(&device, ordinal), "cuDeviceGet");
    if (device == current) return ordinal;
  }
  return 0;
}

std::unique_ptr<Backend> make_default_backend(const Config& config, int device) {
  const cuda::Driver* driver = chosen_driver(config);
  log_choice_once(config, driver);
  if (driver != nullptr) {
    if (device < 0 || device >= driver->device_count) {
      throw InvalidArgumentError("device " + std::to_string(device) +
                                 " does not exist: the CUDA driver reports " +
                                 std::to_string(driver->device_count) + " device(s)");
    }
    return std::make_unique<CudaBackend>(device);
  }
  if (device != 0) {
    throw InvalidArgumentError("device " + std::to_string(device) +
                               " does not exist: the host backend has 1 device (0)");
  }
  HostBackend::Options options;
  options.device = 0;
  options.device_memory = config.host_device_memory;
  return std::make_unique<HostBackend>(options);
}

}  // namespace vmm
