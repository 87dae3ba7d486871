// The public peer-access calls (include/vmmalloc/peer_access.hpp) over the
// process-wide device contexts; the mechanism is PeerAccessBackend
// (allocator/backend/peer_access_backend.hpp).
#include "vmmalloc/peer_access.hpp"

#include "allocator/observe/process_context.hpp"
#include "allocator/vm/device_context.hpp"

namespace vmm {

bool can_access_peer(int device, int peer) {
  return process_context(device).backend().can_access_peer(peer);
}

void enable_peer_access(int device, int peer) {
  const int peers[] = {peer};
  process_context(device).grant_peer_access(peers);
}

std::vector<int> peer_access_devices(int device) {
  return process_context(device).access_devices();
}

}  // namespace vmm
