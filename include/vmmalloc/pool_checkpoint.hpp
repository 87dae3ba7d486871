// Checkpoints of a graph pool (vmm::Allocator::checkpoint_pool and
// restore_pool): what PyTorch's CUDA-graph trees keep of a pool after
// recording a graph, and what restoring one changed (docs/pytorch.md).
// C++17: PyTorch extensions include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "vmmalloc/stats.hpp"
#include "vmmalloc/vmmalloc.h"

namespace vmm {

// The live blocks of a pool at the checkpoint.
struct PoolCheckpoint {
  struct LiveBlock {
    std::uintptr_t addr = 0;
    std::size_t size = 0;       // the block's (rounded) size
    std::size_t requested = 0;  // what was asked for
    vmm_stream_t stream = nullptr;
  };
  PoolId pool = 0;
  std::vector<LiveBlock> live;  // ascending addresses
};

// What restore_pool did: the blocks it freed (live before) and those it made
// live again (the checkpoint's); an address may be in both.
struct CheckpointDelta {
  std::vector<void*> freed;
  std::vector<void*> allocated;
};

}  // namespace vmm
