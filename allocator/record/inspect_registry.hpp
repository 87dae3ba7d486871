// Inspection registry: the live device contexts, heaps and workspace regions
// of the process, so a snapshot (allocator/observe/snapshot.hpp) can find them all -
// the process-wide ones and those built over explicit contexts (tests,
// embedders, vmm_replay).
//
// Each layer registers itself when made and unregisters when destroyed
// (DeviceContext, Allocator for its heap, Region). visit() runs a function
// with the registry locked, so nothing registered is destroyed while a
// snapshot reads it. Lock order: the registry lock is outermost - it is taken
// before any layer's lock and never while one is held (registration happens
// outside every layer lock).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace vmm {

class DeviceContext;
class Heap;
class Region;

namespace inspect {

// Registration. Never throw: out of host memory, the object is simply not
// shown in snapshots (and the log says so).
void add_context(DeviceContext& context) noexcept;
void remove_context(DeviceContext& context) noexcept;
void add_heap(const Heap& heap) noexcept;
void remove_heap(const Heap& heap) noexcept;
void add_region(const Region& region) noexcept;
void remove_region(const Region& region) noexcept;

// A workspace's name, shown in snapshots ("" if unnamed). Throws
// InvalidArgumentError if the region is not registered.
void set_region_name(const Region& region, std::string_view name);
std::string region_name(const Region& region);

struct RegisteredRegion {
  const Region* region = nullptr;
  std::uint64_t id = 0;  // 1, 2, ... in order of creation, never reused
  std::string name;
};

struct Registered {
  std::vector<DeviceContext*> contexts;  // in order of creation
  std::vector<const Heap*> heaps;
  std::vector<RegisteredRegion> regions;
};

// Runs `fn` with the registry locked. `fn` may take any layer's locks but
// must not register or unregister anything.
void visit(const std::function<void(const Registered&)>& fn);

}  // namespace inspect
}  // namespace vmm
