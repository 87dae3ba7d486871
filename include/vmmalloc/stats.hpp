// Value types the allocator reports and takes: its counters
// (AllocatorStats, named after PyTorch's memory_stats) and graph-pool ids.
// Shared by the public API (allocator.hpp) and the library's layers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vmm {

// The counters of one device's allocator, listed once. Each entry is
// X(type, name, snapshot key, meaning):
//   name          the AllocatorStats member; also the field of the C struct
//                 vmm_allocator_stats and the key of vmmalloc.torch's
//                 memory_stats()
//   snapshot key  its key in a snapshot's "counters" (docs/snapshot.md):
//                 PyTorch's memory_stats name where one applies, else
//                 "vmmalloc.<name>"
// The list makes the struct below and kAllocatorStatFields; consumers that
// keep their own names check theirs against it. Add new counters at the end:
// the C struct must keep its layout.
#define VMM_ALLOCATOR_STATS(X)                                                                     \
  X(std::size_t, allocated_bytes, "allocated_bytes.all.current",                                   \
    "live blocks (their rounded sizes)")                                                           \
  X(std::size_t, peak_allocated_bytes, "allocated_bytes.all.peak", "peak of allocated_bytes")      \
  X(std::size_t, requested_bytes, "requested_bytes.all.current",                                   \
    "live blocks (sizes as requested)")                                                            \
  X(std::size_t, peak_requested_bytes, "requested_bytes.all.peak", "peak of requested_bytes")      \
  X(std::size_t, reserved_bytes, "reserved_bytes.all.current",                                     \
    "physical memory held: mapped + cached + pending")                                             \
  X(std::size_t, peak_reserved_bytes, "reserved_bytes.all.peak", "peak of reserved_bytes")         \
  X(std::size_t, mapped_bytes, "vmmalloc.mapped_bytes", "physical memory mapped in the heap")      \
  X(std::size_t, cached_bytes, "vmmalloc.cached_bytes", "free chunks kept by the pool (unmapped)") \
  X(std::size_t, pending_bytes, "vmmalloc.pending_bytes", "unmaps waiting for their fences")       \
  X(std::size_t, inactive_split_bytes, "inactive_split_bytes.all.current",                         \
    "free bytes inside mapped segments")                                                           \
  X(std::size_t, active_blocks, "active.all.current", "live blocks")                               \
  X(std::uint64_t, allocations, "allocation.all.allocated", "allocations so far")                  \
  X(std::uint64_t, frees, "allocation.all.freed", "frees so far")                                  \
  X(std::uint64_t, stitches, "vmmalloc.stitches", "allocations served by stitching free chunks")   \
  X(std::uint64_t, chunk_creates, "num_device_alloc", "physical handles created")                  \
  X(std::uint64_t, chunk_releases, "num_device_free", "physical handles released")                 \
  X(std::uint64_t, ooms, "num_ooms", "allocations that failed out of memory")                      \
  X(std::uint64_t, fenced_free_waits, "vmmalloc.fenced_free_waits",                                \
    "waits for other streams' work instead of mapping (Config::fenced_free_limit)")

// Counters of one device's allocator (VMM_ALLOCATOR_STATS above says what
// each means). Names follow PyTorch's memory_stats.
struct AllocatorStats {
#define VMM_ALLOCATOR_STATS_MEMBER_(type, name, key, meaning) type name = 0;
  VMM_ALLOCATOR_STATS(VMM_ALLOCATOR_STATS_MEMBER_)
#undef VMM_ALLOCATOR_STATS_MEMBER_
};

// One counter of VMM_ALLOCATOR_STATS, as data: for code that walks all of
// them (the snapshot's "counters", vmmalloc.torch's memory_stats()).
struct AllocatorStatField {
  const char* name;                                        // the member's name
  const char* snapshot_key;                                // its key in a snapshot's "counters"
  const char* meaning;                                     // one line
  std::uint64_t (*value)(const AllocatorStats&) noexcept;  // reads the member
};

// Every counter, in the list's order.
inline constexpr AllocatorStatField kAllocatorStatFields[] = {
#define VMM_ALLOCATOR_STATS_FIELD_(type, name, key, meaning) \
  {#name, key, meaning, [](const AllocatorStats& s) noexcept -> std::uint64_t { return s.name; }},
    VMM_ALLOCATOR_STATS(VMM_ALLOCATOR_STATS_FIELD_)
#undef VMM_ALLOCATOR_STATS_FIELD_
};

using PoolId = std::uint64_t;  // a graph pool; 0 is never a valid id

}  // namespace vmm
