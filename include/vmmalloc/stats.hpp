// Value types the allocator reports and takes: its counters
// (AllocatorStats, named after PyTorch's memory_stats) and graph-pool ids.
// Shared by the public API (allocator.hpp) and the library's layers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vmm {

// Counters of one device's allocator. Names follow PyTorch's memory_stats.
struct AllocatorStats {
  std::size_t allocated_bytes = 0;  // live blocks (their rounded sizes)
  std::size_t peak_allocated_bytes = 0;
  std::size_t requested_bytes = 0;  // live blocks (sizes as requested)
  std::size_t peak_requested_bytes = 0;
  std::size_t reserved_bytes = 0;  // physical memory held: mapped + cached + pending
  std::size_t peak_reserved_bytes = 0;
  std::size_t mapped_bytes = 0;          // physical memory mapped in the heap
  std::size_t cached_bytes = 0;          // free chunks kept by the pool (unmapped)
  std::size_t pending_bytes = 0;         // unmaps waiting for their fences
  std::size_t inactive_split_bytes = 0;  // free bytes inside mapped segments
  std::size_t active_blocks = 0;
  std::uint64_t allocations = 0;
  std::uint64_t frees = 0;
  std::uint64_t stitches = 0;       // allocations served by stitching free chunks
  std::uint64_t chunk_creates = 0;  // physical handles created
  std::uint64_t chunk_releases = 0;
  std::uint64_t ooms = 0;               // allocations that failed out of memory
  std::uint64_t fenced_free_waits = 0;  // waits for other streams' work instead of mapping
                                        // (Config::fenced_free_limit)
};

using PoolId = std::uint64_t;  // a graph pool; 0 is never a valid id

}  // namespace vmm
