// See block_registry.hpp.
#include "preload/block_registry.hpp"

#include <cstdint>

namespace vmm::preload {

BlockRegistry::Shard& BlockRegistry::shard(const void* ptr) const noexcept {
  // Blocks are at least 512-byte aligned: skip the always-zero bits.
  const auto addr = reinterpret_cast<std::uintptr_t>(ptr);
  return shards_[(addr >> 9 ^ addr >> 21) % kShards];
}

void BlockRegistry::insert(void* ptr, BlockInfo info) {
  Shard& sh = shard(ptr);
  std::lock_guard lock(sh.mutex);
  sh.blocks[ptr] = info;
}

std::optional<BlockInfo> BlockRegistry::find(const void* ptr) const {
  Shard& sh = shard(ptr);
  std::lock_guard lock(sh.mutex);
  auto it = sh.blocks.find(ptr);
  if (it == sh.blocks.end()) return std::nullopt;
  return it->second;
}

std::optional<BlockInfo> BlockRegistry::take(const void* ptr) {
  Shard& sh = shard(ptr);
  std::lock_guard lock(sh.mutex);
  auto it = sh.blocks.find(ptr);
  if (it == sh.blocks.end()) return std::nullopt;
  BlockInfo info = it->second;
  sh.blocks.erase(it);
  return info;
}

bool BlockRegistry::any_owned_by(vmm_stream_t stream) const {
  for (const Shard& sh : shards_) {
    std::lock_guard lock(sh.mutex);
    for (const auto& [ptr, info] : sh.blocks) {
      if (info.stream == stream) return true;
    }
  }
  return false;
}

}  // namespace vmm::preload
