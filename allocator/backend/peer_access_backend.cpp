// PeerAccessBackend and the peer_access configuration (see
// peer_access_backend.hpp).
#include "allocator/backend/peer_access_backend.hpp"

#include <algorithm>
#include <iterator>
#include <string>
#include <utility>

#include "allocator/base/log.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {

std::string device_list(const std::vector<int>& devices) {
  if (devices.empty()) return "none";
  std::string out;
  for (int d : devices) {
    if (!out.empty()) out += ", ";
    out += std::to_string(d);
  }
  return out;
}

// Every device other than `backend`'s own that can reach its memory.
std::vector<int> reachable_peers(Backend& backend) {
  std::vector<int> peers;
  for (int p = 0; p < backend.device_count(); ++p) {
    if (p != backend.device() && backend.can_access_peer(p)) peers.push_back(p);
  }
  return peers;
}

}  // namespace

PeerAccessBackend::PeerAccessBackend(Backend& inner)
    : ForwardingBackend(inner), access_{inner.device()} {}

std::vector<int> PeerAccessBackend::access_devices() const {
  std::shared_lock lock(grant_mutex_);
  return access_;
}

void PeerAccessBackend::grant_peers(std::span<const int> peers) {
  // Checked before anything changes: existence, then reachability.
  std::vector<int> fresh;
  {
    std::shared_lock lock(grant_mutex_);
    for (int p : peers) {
      if (p < 0 || p >= device_count()) {
        throw InvalidArgumentError("peer device " + std::to_string(p) +
                                   " does not exist (valid: 0 to " +
                                   std::to_string(device_count() - 1) + ")");
      }
      const bool known = std::find(access_.begin(), access_.end(), p) != access_.end() ||
                         std::find(fresh.begin(), fresh.end(), p) != fresh.end();
      if (!known) fresh.push_back(p);
    }
  }
  for (int p : fresh) {
    if (!inner().can_access_peer(p)) {
      throw NotSupportedError("device " + std::to_string(p) + " cannot access memory of device " +
                              std::to_string(device()) +
                              " (cuDeviceCanAccessPeer says no); devices that can: " +
                              device_list(reachable_peers(inner())));
    }
  }
  if (fresh.empty()) return;

  std::unique_lock lock(grant_mutex_);
  std::vector<std::pair<std::uintptr_t, std::size_t>> runs;  // contiguous mapped ranges
  {
    std::lock_guard table(table_mutex_);
    for (const auto& [va, bytes] : mapped_) {
      if (!runs.empty() && runs.back().first + runs.back().second == va) {
        runs.back().second += bytes;
      } else {
        runs.emplace_back(va, bytes);
      }
    }
  }
  for (const auto& [va, bytes] : runs) inner().set_access(va, bytes, fresh);
  // Another thread may have granted some of them meanwhile: keep each once.
  for (int p : fresh) {
    if (std::find(access_.begin(), access_.end(), p) == access_.end()) access_.push_back(p);
  }
  log(LogLevel::info, "device %d: memory accessible to devices %s (%zu mapped range(s) granted)",
      device(), device_list(access_).c_str(), runs.size());
}

void PeerAccessBackend::map(std::uintptr_t va, std::size_t bytes, PhysicalHandle handle) {
  std::shared_lock lock(grant_mutex_);
  inner().map(va, bytes, handle);
  std::lock_guard table(table_mutex_);
  mapped_[va] = bytes;
}

void PeerAccessBackend::unmap(std::uintptr_t va, std::size_t bytes) {
  std::shared_lock lock(grant_mutex_);
  inner().unmap(va, bytes);
  std::lock_guard table(table_mutex_);
  mapped_.erase(mapped_.lower_bound(va), mapped_.lower_bound(va + bytes));
}

void PeerAccessBackend::set_access(std::uintptr_t va, std::size_t bytes) {
  std::shared_lock lock(grant_mutex_);
  if (access_.size() == 1) {
    inner().set_access(va, bytes);
  } else {
    inner().set_access(va, bytes, access_);
  }
}

void PeerAccessBackend::set_access(std::uintptr_t va, std::size_t bytes,
                                   std::span<const int> devices) {
  std::shared_lock lock(grant_mutex_);
  inner().set_access(va, bytes, devices);
}

std::vector<int> configured_peers(const Config& config, Backend& backend) {
  switch (config.peer_access) {
    case PeerAccessMode::none:
      return {};
    case PeerAccessMode::all:
      return reachable_peers(backend);
    case PeerAccessMode::list:
      break;
  }
  std::vector<int> peers;
  for (int p : config.peer_access_devices) {
    if (p == backend.device()) continue;
    if (p >= backend.device_count()) {
      throw ConfigError("peer_access",
                        "VMMALLOC_CONF: peer_access lists device " + std::to_string(p) +
                            ", which does not exist: the " + backend.name() + " backend has " +
                            std::to_string(backend.device_count()) + " device(s), 0 to " +
                            std::to_string(backend.device_count() - 1));
    }
    if (!backend.can_access_peer(p)) {
      throw ConfigError("peer_access",
                        "VMMALLOC_CONF: peer_access lists device " + std::to_string(p) +
                            ", which cannot access memory of device " +
                            std::to_string(backend.device()) +
                            "; devices that can: " + device_list(reachable_peers(backend)));
    }
    peers.push_back(p);
  }
  return peers;
}

}  // namespace vmm
