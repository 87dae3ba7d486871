// Snapshot views: plain copies of each layer's state, made under that layer's
// own locks by its describe() method (Heap, Reclaimer, AddressSpace) and
// turned into JSON by allocator/observe/snapshot.cpp. No describe() calls the
// driver: a snapshot is safe from any thread, during a CUDA-graph capture too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "allocator/base/types.hpp"
#include "vmmalloc/stats.hpp"

namespace vmm {

// A physical chunk mapped at `va`. An alias is a second address of a chunk
// mapped elsewhere too (heap stitching), waiting to be unmapped.
struct ChunkView {
  std::uintptr_t va = 0;
  std::size_t bytes = 0;
  bool alias = false;
};

struct BlockView {
  enum class State : std::uint8_t { live, cached, free };
  std::uintptr_t addr = 0;
  std::size_t size = 0;           // rounded size (the block's extent)
  std::size_t requested = 0;      // as requested (live blocks; 0 otherwise)
  std::uintptr_t stream = 0;      // owner stream (allocated on / freed in its order)
  std::size_t other_streams = 0;  // record_stream and cross-stream users
  State state = State::free;
  bool neutral = false;  // free and every user's work done: usable by any stream
  PoolId pool = 0;
};

// A heap segment: a VA range with whole chunks mapped behind parts of it,
// tiled by blocks where mapped.
struct SegmentView {
  VaRange range;
  bool small = false;              // serves small (size-class) requests
  PoolId pool = 0;                 // 0: general pool, else a graph or tag pool
  std::string tag;                 // the pool's tag (docs/sleep.md), "" if none
  bool asleep = false;             // its chunks are released until wake: nothing mapped
  std::vector<ChunkView> chunks;   // ascending addresses
  std::vector<BlockView> blocks;   // ascending addresses (empty without blocks)
  std::size_t pending_unmaps = 0;  // reclaimer entries holding chunks detached from it
};

struct HeapView {
  AllocatorStats stats;
  std::size_t device_total_bytes = 0;  // read once when the heap was made; 0 if unknown
  std::vector<SegmentView> segments;   // ascending base addresses
  std::vector<PoolId> graph_pools;     // live graph pools
  std::size_t capturing_streams = 0;   // streams between begin_pool and end_pool
  std::uint64_t fences_recorded = 0;
};

// A reclaim waiting for its fences.
struct ReclaimView {
  std::uint64_t ticket = 0;
  std::size_t bytes = 0;     // physical bytes it returns (aliases not counted)
  bool in_progress = false;  // being unmapped right now
  // Per fence: true once seen complete. A fence not yet seen complete may be
  // complete already: describe() never queries the driver.
  std::vector<bool> fences_complete;
  std::vector<ChunkView> mappings;
  VaRange range;  // address range freed after the unmap (empty: none)
};

struct ReservationView {
  VaRange range;
  bool dedicated = false;  // made for one large range, freed with it
  std::size_t allocated_bytes = 0;
  std::vector<VaRange> free;  // ascending, coalesced
};

}  // namespace vmm
