// Devices this extension has put vmmalloc to work on (allocations through
// PyTorch, workspaces, stats asked for). Process-wide calls that cover
// "every device" (empty_cache, PyTorch's emptyCache) visit only these, so
// they never create vmmalloc state, or a CUDA context, on an unused GPU.
// Lock-free: one atomic flag per device.
#pragma once

#include <vector>

namespace vmmalloc_torch {

// vmmalloc's own limit on device ordinals (allocator.cpp's kMaxDevices).
constexpr int kMaxDevices = 64;

// Records that `device` is in use; ordinals outside [0, kMaxDevices) are
// ignored (vmmalloc refuses them itself).
void note_device(int device) noexcept;
// Whether `device` was noted.
bool device_noted(int device) noexcept;
// The devices noted so far, in ascending order.
std::vector<int> noted_devices();

}  // namespace vmmalloc_torch
