// Snapshots and events (C++ API). A snapshot is one JSON document with the
// allocator's whole state: process and configuration, per device its
// counters (PyTorch's memory_stats names), totals, physical pool, address
// space, every region (workspaces and heap segments) with its chunks and
// blocks, pending reclaims with their fences, and the recent events. The
// schema is versioned and documented in docs/snapshot.md; `vmmctl` reads
// snapshot files and live processes (docs/tools.md).
//
// Taking a snapshot waits for no GPU work and makes no driver call; it takes
// each layer's locks briefly, never the allocation hot path's for long.
#pragma once

#include <string>

#include "vmmalloc/export.h"

namespace vmm {

// The snapshot of this process now, as compact JSON. Throws std::bad_alloc
// only.
VMM_API std::string snapshot_json();

// Writes the snapshot to `path` ("%p" becomes the process id, "%%" a "%"),
// through a temporary file renamed into place, and returns the path written.
// Throws InvalidArgumentError naming the path and the system error.
VMM_API std::string write_snapshot(const std::string& path);

// Per-allocation events (allocate, free) in the event ring: off by default
// (VMMALLOC_CONF allocation_events:on turns them on at start). Process-wide;
// takes effect at once. While off they cost one relaxed atomic load per
// allocation and per free.
VMM_API void set_allocation_events(bool on) noexcept;
VMM_API bool allocation_events() noexcept;

}  // namespace vmm
