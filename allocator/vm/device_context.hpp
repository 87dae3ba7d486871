// DeviceContext: all allocator state for one device - its backend, physical
// pool, address space and reclaimer - wired together in dependency order.
//
// The backend every layer uses is a PeerAccessBackend over the one given:
// it grants the device's peers (Config::peer_access, then
// grant_peer_access()) access to every mapping, present and future.
//
// The process-wide contexts (one per device, created on first use from
// Config::from_environment() and the default backend) come from
// device_context(). Tests and embedders build their own over any backend.
// Thread-safe: each member guards itself (see each layer's file).
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "allocator/backend/backend.hpp"
#include "allocator/backend/peer_access_backend.hpp"
#include "allocator/vm/address_space.hpp"
#include "allocator/vm/physical_pool.hpp"
#include "allocator/vm/reclaimer.hpp"
#include "allocator/vm/tagged_regions.hpp"
#include "vmmalloc/config.hpp"

namespace vmm {

class DeviceContext {
 public:
  // Takes ownership of `backend` and grants the peers Config::peer_access
  // names. Throws ConfigError if `config` is invalid or names a peer that
  // does not exist or cannot reach this device.
  DeviceContext(std::unique_ptr<Backend> backend, const Config& config);
  // Stops the reclaimer after completing every pending reclaim (waiting on
  // their fences), releases cached chunks and frees all VA reservations.
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  // The backend as the layers use it (peer access granted on each mapping).
  Backend& backend() noexcept { return *access_; }
  const Config& config() const noexcept { return config_; }
  PhysicalPool& pool() noexcept { return *pool_; }
  AddressSpace& address_space() noexcept { return *address_space_; }
  Reclaimer& reclaimer() noexcept { return *reclaimer_; }
  // The tagged workspace regions, for sleep and wake.
  TaggedRegions& tagged_regions() noexcept { return tagged_regions_; }
  int device() const noexcept { return backend_->device(); }

  // Makes this device's memory - mapped now and mapped later - readable and
  // writable by `peers` (see PeerAccessBackend::grant_peers for the errors).
  void grant_peer_access(std::span<const int> peers) { access_->grant_peers(peers); }
  // This device, then the peers granted access to its memory.
  std::vector<int> access_devices() const { return access_->access_devices(); }

 private:
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<PeerAccessBackend> access_;
  Config config_;
  std::unique_ptr<PhysicalPool> pool_;
  std::unique_ptr<AddressSpace> address_space_;
  std::unique_ptr<Reclaimer> reclaimer_;
  TaggedRegions tagged_regions_;
};

// Applies `config` to contexts created from now on. Throws InvalidArgumentError
// if any process-wide context already exists.
void configure_process(const Config& config);
// The process-wide context of `device` (-1: the calling thread's current CUDA
// device, or 0 on the host backend). Created on first use; lives until exit.
// Throws InvalidArgumentError for a device that does not exist (or below
// -1), NotSupportedError in a child forked after vmmalloc was initialised
// (allocator/base/fork_guard.hpp).
DeviceContext& device_context(int device);
// The devices whose process-wide context exists (none in a forked child).
std::vector<int> process_devices();

}  // namespace vmm
