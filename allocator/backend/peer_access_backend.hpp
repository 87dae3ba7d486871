// PeerAccessBackend: a Backend adaptor that makes a device's memory readable
// and writable by its peer devices.
//
// Every mapping vmmalloc makes on a device - workspace chunks, the heap's
// segments and stitched aliases, imported IPC chunks - goes through the
// device context's backend, which is this adaptor over the real one
// (DeviceContext installs it). It keeps the device's ACCESS SET (the device
// itself, then the peers granted so far) and a table of the ranges mapped
// now:
//   set_access(va, bytes)  grants the whole access set in one driver call
//                          (one descriptor per device), so a chunk mapped
//                          after a grant is accessible to the peer too: a
//                          workspace grown later stays accessible
//   grant_peers(peers)     adds peers to the set and grants them on every
//                          range mapped now (one call per run of contiguous
//                          mappings)
// With no peer granted, set_access passes straight through as the
// single-device call, so a one-GPU process sees exactly the calls it made
// before. The driver needs this: cudaDeviceEnablePeerAccess does not cover
// VMM memory, cuMemSetAccess must name each peer.
//
// Thread-safety: grant_mutex_ is held shared by map/unmap/set_access across
// their inner call and exclusively by grant_peers, so a grant sees every
// mapping either before it is made (its set_access then grants the new set)
// or after (the grant covers it), and never a range being unmapped.
// table_mutex_ guards the table of mapped ranges only. Lock order:
// grant_mutex_ -> table_mutex_; nothing else is locked inside them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <vector>

#include "allocator/backend/forwarding_backend.hpp"
#include "vmmalloc/config.hpp"

namespace vmm {

class PeerAccessBackend final : public ForwardingBackend {
 public:
  // Wraps `inner`, which must outlive this object. The access set starts as
  // the device alone.
  explicit PeerAccessBackend(Backend& inner);
  PeerAccessBackend(const PeerAccessBackend&) = delete;
  PeerAccessBackend& operator=(const PeerAccessBackend&) = delete;

  // Adds `peers` to the access set and grants each read/write access to
  // every range mapped now; later mappings get them through set_access().
  // The device itself and peers already granted are skipped. Throws
  // InvalidArgumentError for a device that does not exist and
  // NotSupportedError for one that cannot reach this device's memory
  // (nothing changed then); DriverError if granting fails (the peers are then
  // not added, though some ranges may already be readable by them).
  void grant_peers(std::span<const int> peers);
  // This device, then the peers granted, in the order granted.
  std::vector<int> access_devices() const;

  // --- Backend: the calls it changes; the rest are forwarded unchanged -----
  // Recorded in the table of mapped ranges.
  void map(std::uintptr_t va, std::size_t bytes, PhysicalHandle handle) override;
  void unmap(std::uintptr_t va, std::size_t bytes) override;
  // Grants the whole access set.
  void set_access(std::uintptr_t va, std::size_t bytes) override;
  // Passed through, under grant_mutex_ (shared) like the calls above.
  void set_access(std::uintptr_t va, std::size_t bytes, std::span<const int> devices) override;

 private:
  mutable std::shared_mutex grant_mutex_;
  std::vector<int> access_;  // this device first; guarded by grant_mutex_

  std::mutex table_mutex_;
  std::map<std::uintptr_t, std::size_t> mapped_;  // va -> bytes of each mapping
};

// The peers `config.peer_access` names for `backend`'s device: none; every
// other device that can reach it (all); or the listed devices other than
// the device itself (list). Throws ConfigError (key peer_access) naming a
// listed device that does not exist or cannot reach the device, and the
// valid ones; DriverError if asking the driver fails.
std::vector<int> configured_peers(const Config& config, Backend& backend);

}  // namespace vmm
