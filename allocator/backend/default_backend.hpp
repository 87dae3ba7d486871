// Chooses the backend for a device: CudaBackend where the driver loads and
// the device exists, else HostBackend (unless the config forces one).
#pragma once

#include <memory>
#include <string>

#include "allocator/backend/backend.hpp"
#include "vmmalloc/config.hpp"

namespace vmm {

// Number of devices the chosen backend kind offers (host: 1).
int default_backend_device_count(const Config& config);
// The calling thread's current CUDA device (0 if none or on the host backend).
int default_backend_current_device(const Config& config);
// Throws InvalidArgumentError for a bad device, DriverError if the driver
// fails, ConfigError if backend:cuda is forced but no GPU is usable.
std::unique_ptr<Backend> make_default_backend(const Config& config, int device);

}  // namespace vmm
