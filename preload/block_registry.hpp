// BlockRegistry: the blocks the interposer handed out and that are still
// live, by address.
//
// The library knows every live block too, but not which front door it came
// through: a program may also allocate from vmmalloc directly (vmm_malloc,
// vmm::Allocator, the PyTorch allocator), and cudaFree must not free those
// (CUDA would refuse them). The registry also lets cudaDeviceReset free
// every block of the reset device, as CUDA frees every allocation there.
//
// Thread-safety: 64 shards, each its own mutex; no call holds two.
#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "vmmalloc/vmmalloc.h"

namespace vmm::preload {

enum class AllocCall : int { cudaMalloc, cudaMallocAsync, cuMemAlloc_v2, cuMemAllocAsync, count_ };

struct BlockInfo {
  int device = 0;
  AllocCall call = AllocCall::cudaMalloc;
  std::size_t bytes = 0;  // as requested
  // The stream a stream-ordered allocation was made on (its owner in
  // vmmalloc until freed); null for cudaMalloc / cuMemAlloc.
  vmm_stream_t stream = nullptr;
};

class BlockRegistry {
 public:
  void insert(void* ptr, BlockInfo info);
  std::optional<BlockInfo> find(const void* ptr) const;
  // Removes and returns the entry of `ptr`, if any.
  std::optional<BlockInfo> take(const void* ptr);
  // Whether some live block is owned by `stream` (a scan: for the rare
  // destroy of a stream that still owns blocks).
  bool any_owned_by(vmm_stream_t stream) const;
  // Removes and returns every entry for which take(info) is true.
  template <typename Pred>
  std::vector<std::pair<void*, BlockInfo>> take_if(Pred&& take) {
    std::vector<std::pair<void*, BlockInfo>> taken;
    for (Shard& sh : shards_) {
      std::lock_guard lock(sh.mutex);
      for (auto it = sh.blocks.begin(); it != sh.blocks.end();) {
        if (take(it->second)) {
          taken.emplace_back(const_cast<void*>(it->first), it->second);
          it = sh.blocks.erase(it);
        } else {
          ++it;
        }
      }
    }
    return taken;
  }

 private:
  static constexpr std::size_t kShards = 64;
  struct alignas(64) Shard {
    mutable std::mutex mutex;
    std::unordered_map<const void*, BlockInfo> blocks;
  };
  Shard& shard(const void* ptr) const noexcept;
  mutable std::array<Shard, kShards> shards_;
};

}  // namespace vmm::preload
