// The value types every layer shares: streams, physical and fence handles,
// address ranges, chunks and their mappings. Plain data, no behaviour; the
// layers that create and consume them say what each field means to them
// (backend: handles and fences; vm/physical_pool: chunks; vm/reclaimer and
// the heap: mappings).
#pragma once

#include <cstddef>
#include <cstdint>

#include "vmmalloc/vmmalloc.h"

namespace vmm {

using Stream = vmm_stream_t;

// A physical memory handle (CUmemGenericAllocationHandle, or a host memfd).
struct PhysicalHandle {
  std::uint64_t value = 0;
  friend bool operator==(PhysicalHandle, PhysicalHandle) = default;
};

// A recorded fence (a CUevent, or a host fence object).
struct FenceHandle {
  void* value = nullptr;
  friend bool operator==(FenceHandle, FenceHandle) = default;
};

// A virtual address range.
struct VaRange {
  std::uintptr_t base = 0;
  std::size_t bytes = 0;
  std::uintptr_t end() const noexcept { return base + bytes; }
  bool empty() const noexcept { return bytes == 0; }
};

// A physical chunk: one handle, always mapped whole.
struct Chunk {
  PhysicalHandle handle;
  std::size_t bytes = 0;
  // Set by PhysicalPool::acquire(), unique per acquisition from that pool
  // (never 0 for an acquired chunk): IPC tells apart the chunks behind one
  // offset by it.
  std::uint64_t serial = 0;
  // Exported to another process: released, never reused, once given back.
  bool shared = false;
};

// One mapped chunk: `chunk` is mapped (whole) at `va`. An alias mapping is a
// second address of a chunk that stays mapped (and in use) elsewhere: the
// reclaimer only unmaps it, and neither returns the chunk to the pool nor
// counts it as pending.
struct Mapping {
  std::uintptr_t va = 0;
  Chunk chunk;
  bool alias = false;
  std::uintptr_t end() const noexcept { return va + chunk.bytes; }
};

}  // namespace vmm
