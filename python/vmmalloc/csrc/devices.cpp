#include "devices.hpp"

#include <array>
#include <atomic>

namespace vmmalloc_torch {

namespace {

std::array<std::atomic<bool>, kMaxDevices>& flags() {
  static std::array<std::atomic<bool>, kMaxDevices> used{};
  return used;
}

}  // namespace

void note_device(int device) noexcept {
  if (device < 0 || device >= kMaxDevices) return;
  auto& flag = flags()[static_cast<std::size_t>(device)];
  if (!flag.load(std::memory_order_relaxed)) flag.store(true, std::memory_order_relaxed);
}

bool device_noted(int device) noexcept {
  if (device < 0 || device >= kMaxDevices) return false;
  return flags()[static_cast<std::size_t>(device)].load(std::memory_order_relaxed);
}

std::vector<int> noted_devices() {
  std::vector<int> out;
  for (int d = 0; d < kMaxDevices; ++d) {
    if (flags()[static_cast<std::size_t>(d)].load(std::memory_order_relaxed)) out.push_back(d);
  }
  return out;
}

}  // namespace vmmalloc_torch
