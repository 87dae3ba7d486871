// See stream_registry.hpp.
#include "preload/stream_registry.hpp"

#include <algorithm>

namespace vmm::preload {

bool StreamRegistry::add(vmm_stream_t stream, Info info) {
  std::unique_lock lock(mutex_);
  erase_locked(stream);  // a handle the program destroyed behind our back
  streams_[stream] = info;
  if (info.nonblocking) nonblocking_[static_cast<std::size_t>(info.device)].push_back(stream);
  ++created_;
  auto it = released_.find(stream);
  if (it == released_.end()) return false;
  const bool same_device = it->second == info.device;
  released_.erase(it);
  return same_device;
}

std::optional<StreamRegistry::Info> StreamRegistry::erase_locked(vmm_stream_t stream) {
  auto it = streams_.find(stream);
  if (it == streams_.end()) return std::nullopt;
  const Info info = it->second;
  streams_.erase(it);
  if (info.nonblocking) {
    auto& list = nonblocking_[static_cast<std::size_t>(info.device)];
    list.erase(std::remove(list.begin(), list.end(), stream), list.end());
  }
  return info;
}

void StreamRegistry::remove_device(int device) {
  std::unique_lock lock(mutex_);
  for (auto it = streams_.begin(); it != streams_.end();) {
    it = it->second.device == device ? streams_.erase(it) : std::next(it);
  }
  nonblocking_[static_cast<std::size_t>(device)].clear();
}

std::size_t StreamRegistry::created() const {
  std::shared_lock lock(mutex_);
  return created_;
}

}  // namespace vmm::preload
