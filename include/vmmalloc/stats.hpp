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
//
// small_* and large_* split the block figures by the heap's size kinds: a
// block is small when its rounded size is below 1 MiB (PyTorch's small pool
// takes up to and including 1 MiB). "so far" counts since the allocator was
// made (freed = allocated so far - live). Exactness (docs/api.md): counts and
// totals are exact at rest; peaks are exact for one thread and never counted
// high, but with several threads may be counted short (usage_counters.hpp).
// There is no max_split_size, so nothing is "oversize" (PyTorch's default).
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
    "waits for other streams' work instead of mapping (Config::fenced_free_limit)")                \
  X(std::uint64_t, total_allocated_bytes, "allocated_bytes.all.allocated",                         \
    "bytes allocated so far (rounded sizes)")                                                      \
  X(std::uint64_t, total_freed_bytes, "allocated_bytes.all.freed",                                 \
    "bytes freed so far (rounded sizes)")                                                          \
  X(std::uint64_t, total_requested_bytes, "requested_bytes.all.allocated",                         \
    "bytes allocated so far (as requested)")                                                       \
  X(std::uint64_t, total_freed_requested_bytes, "requested_bytes.all.freed",                       \
    "bytes freed so far (as requested)")                                                           \
  X(std::size_t, peak_active_blocks, "active.all.peak", "peak of active_blocks")                   \
  X(std::uint64_t, alloc_retries, "num_alloc_retries",                                             \
    "allocations retried after out of memory (fences waited, unmaps drained)")                     \
  X(std::size_t, small_allocated_bytes, "allocated_bytes.small_pool.current",                      \
    "live small blocks (rounded sizes)")                                                           \
  X(std::size_t, peak_small_allocated_bytes, "allocated_bytes.small_pool.peak",                    \
    "peak of small_allocated_bytes")                                                               \
  X(std::uint64_t, small_total_allocated_bytes, "allocated_bytes.small_pool.allocated",            \
    "small blocks allocated so far (rounded)")                                                     \
  X(std::uint64_t, small_total_freed_bytes, "allocated_bytes.small_pool.freed",                    \
    "small blocks freed so far (rounded)")                                                         \
  X(std::size_t, small_requested_bytes, "requested_bytes.small_pool.current",                      \
    "live small blocks (as requested)")                                                            \
  X(std::size_t, peak_small_requested_bytes, "requested_bytes.small_pool.peak",                    \
    "peak of small_requested_bytes")                                                               \
  X(std::uint64_t, small_total_requested_bytes, "requested_bytes.small_pool.allocated",            \
    "small blocks allocated so far (as requested)")                                                \
  X(std::uint64_t, small_total_freed_requested_bytes, "requested_bytes.small_pool.freed",          \
    "small blocks freed so far (as requested)")                                                    \
  X(std::size_t, small_active_blocks, "active.small_pool.current",                                 \
    "live small blocks (rounded size < 1 MiB)")                                                    \
  X(std::size_t, peak_small_active_blocks, "active.small_pool.peak",                               \
    "peak of small_active_blocks")                                                                 \
  X(std::uint64_t, small_allocations, "allocation.small_pool.allocated",                           \
    "allocations of small blocks so far")                                                          \
  X(std::uint64_t, small_frees, "allocation.small_pool.freed", "frees of small blocks so far")     \
  X(std::size_t, large_allocated_bytes, "allocated_bytes.large_pool.current",                      \
    "live large blocks (rounded sizes)")                                                           \
  X(std::size_t, peak_large_allocated_bytes, "allocated_bytes.large_pool.peak",                    \
    "peak of large_allocated_bytes")                                                               \
  X(std::uint64_t, large_total_allocated_bytes, "allocated_bytes.large_pool.allocated",            \
    "large blocks allocated so far (rounded)")                                                     \
  X(std::uint64_t, large_total_freed_bytes, "allocated_bytes.large_pool.freed",                    \
    "large blocks freed so far (rounded)")                                                         \
  X(std::size_t, large_requested_bytes, "requested_bytes.large_pool.current",                      \
    "live large blocks (as requested)")                                                            \
  X(std::size_t, peak_large_requested_bytes, "requested_bytes.large_pool.peak",                    \
    "peak of large_requested_bytes")                                                               \
  X(std::uint64_t, large_total_requested_bytes, "requested_bytes.large_pool.allocated",            \
    "large blocks allocated so far (as requested)")                                                \
  X(std::uint64_t, large_total_freed_requested_bytes, "requested_bytes.large_pool.freed",          \
    "large blocks freed so far (as requested)")                                                    \
  X(std::size_t, large_active_blocks, "active.large_pool.current",                                 \
    "live large blocks (rounded size >= 1 MiB)")                                                   \
  X(std::size_t, peak_large_active_blocks, "active.large_pool.peak",                               \
    "peak of large_active_blocks")                                                                 \
  X(std::uint64_t, large_allocations, "allocation.large_pool.allocated",                           \
    "allocations of large blocks so far")                                                          \
  X(std::uint64_t, large_frees, "allocation.large_pool.freed", "frees of large blocks so far")

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
