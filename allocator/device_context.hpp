// DeviceContext: all allocator state for one device - its backend, physical
// pool, address space and reclaimer - wired together in dependency order.
//
// The process-wide contexts (one per device, created on first use from
// Config::from_environment() and the default backend) come from
// device_context(). Tests and embedders build their own over any backend.
// Thread-safe: each member guards itself (see each layer's file).
#pragma once

#include <memory>

#include "allocator/address_space.hpp"
#include "allocator/backend/backend.hpp"
#include "allocator/physical_pool.hpp"
#include "allocator/reclaimer.hpp"
#include "vmmalloc/config.hpp"

namespace vmm {

class DeviceContext {
 public:
  // Takes ownership of `backend`. Throws ConfigError if `config` is invalid.
  DeviceContext(std::unique_ptr<Backend> backend, const Config& config);
  // Stops the reclaimer after completing every pending reclaim (waiting on
  // their fences), releases cached chunks and frees all VA reservations.
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  Backend& backend() noexcept { return *backend_; }
  const Config& config() const noexcept { return config_; }
  PhysicalPool& pool() noexcept { return *pool_; }
  AddressSpace& address_space() noexcept { return *address_space_; }
  Reclaimer& reclaimer() noexcept { return *reclaimer_; }
  int device() const noexcept { return backend_->device(); }

 private:
  std::unique_ptr<Backend> backend_;
  Config config_;
  std::unique_ptr<PhysicalPool> pool_;
  std::unique_ptr<AddressSpace> address_space_;
  std::unique_ptr<Reclaimer> reclaimer_;
};

// Applies `config` to contexts created from now on. Throws InvalidArgumentError
// if any process-wide context already exists.
void configure_process(const Config& config);
// The process-wide context of `device` (-1: the calling thread's current CUDA
// device, or 0 on the host backend). Created on first use; lives until exit.
// Throws InvalidArgumentError for a device that does not exist.
DeviceContext& device_context(int device);

}  // namespace vmm
