// Inspection registry implementation: one mutex over three small lists (a
// process holds a handful of contexts and heaps, and its workspaces).
#include "allocator/record/inspect_registry.hpp"

#include <algorithm>
#include <mutex>

#include "allocator/base/log.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm::inspect {

namespace {

struct Registry {
  std::mutex mutex;
  Registered lists;
  std::uint64_t next_region_id = 1;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: exit handlers take snapshots
  return *r;
}

template <typename T>
void erase_value(std::vector<T>& v, const T& value) {
  v.erase(std::remove(v.begin(), v.end(), value), v.end());
}

void out_of_memory(const char* what) noexcept {
  log(LogLevel::warn, "out of host memory registering a %s: it will not show in snapshots", what);
}

}  // namespace

void add_context(DeviceContext& context) noexcept {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  try {
    r.lists.contexts.push_back(&context);
  } catch (...) {
    out_of_memory("device context");
  }
}

void remove_context(DeviceContext& context) noexcept {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  erase_value(r.lists.contexts, &context);
}

void add_heap(const Heap& heap) noexcept {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  try {
    r.lists.heaps.push_back(&heap);
  } catch (...) {
    out_of_memory("heap");
  }
}

void remove_heap(const Heap& heap) noexcept {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  erase_value(r.lists.heaps, &heap);
}

void add_region(const Region& region) noexcept {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  try {
    r.lists.regions.push_back({&region, r.next_region_id++, {}});
  } catch (...) {
    out_of_memory("workspace");
  }
}

void remove_region(const Region& region) noexcept {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  auto& v = r.lists.regions;
  v.erase(std::remove_if(v.begin(), v.end(),
                         [&](const RegisteredRegion& e) { return e.region == &region; }),
          v.end());
}

void set_region_name(const Region& region, std::string_view name) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (RegisteredRegion& e : r.lists.regions) {
    if (e.region == &region) {
      e.name = std::string(name);
      return;
    }
  }
  throw InvalidArgumentError("naming a workspace that is not registered (it was released)");
}

std::string region_name(const Region& region) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (const RegisteredRegion& e : r.lists.regions) {
    if (e.region == &region) return e.name;
  }
  return {};
}

void visit(const std::function<void(const Registered&)>& fn) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  fn(r.lists);
}

}  // namespace vmm::inspect
