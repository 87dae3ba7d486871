// Peer access: memory of one GPU read and written directly by another.
//
// vmmalloc grants access per mapping (cuMemSetAccess must name each device:
// cudaDeviceEnablePeerAccess does not cover memory mapped through the VMM
// API). Once a peer is granted on a device, everything vmmalloc maps there -
// workspaces, allocator blocks, imported workspaces - is accessible to it,
// what is mapped now and what is mapped later (a workspace grown after the
// grant stays accessible). VMMALLOC_CONF's peer_access (none, all, or a list
// such as 0+2+3) grants peers when a device is first used; these calls grant
// them at run time. docs/multi_gpu.md has the details.
#pragma once

#include <vector>

#include "vmmalloc/vmmalloc.h"

namespace vmm {

// Whether `peer` can read and write memory of `device` (-1: the calling
// thread's current device) - cuDeviceCanAccessPeer; true when they are the
// same device. Initialises `device`'s allocator state if needed. Throws
// InvalidArgumentError for a device or peer that does not exist.
VMM_API bool can_access_peer(int device, int peer);

// Makes the memory vmmalloc maps on `device` (-1: current) readable and
// writable by `peer`, mapped now and later. Granting a peer twice, or the
// device itself, does nothing. Throws InvalidArgumentError for a device or
// peer that does not exist, NotSupportedError if `peer` cannot reach
// `device` (nothing changed), DriverError if the driver refuses.
VMM_API void enable_peer_access(int device, int peer);

// `device` (-1: current) followed by the peers granted access to its memory.
VMM_API std::vector<int> peer_access_devices(int device);

}  // namespace vmm
