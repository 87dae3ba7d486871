// vmm::Workspace: the public face of a Region (see include/vmmalloc/workspace.hpp).
#include "vmmalloc/workspace.hpp"

#include "allocator/api/live_control.hpp"
#include "allocator/observe/process_context.hpp"
#include "allocator/observe/snapshot.hpp"
#include "allocator/record/event_ring.hpp"
#include "allocator/record/inspect_registry.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/vm/region.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

Workspace::Workspace(std::size_t capacity, int device)
    : region_(std::make_unique<Region>(api_context(device), capacity)) {}

Workspace::Workspace(DeviceContext& context, std::size_t capacity)
    : region_(std::make_unique<Region>(context, capacity)) {}

Workspace::~Workspace() = default;
Workspace::Workspace(Workspace&&) noexcept = default;
Workspace& Workspace::operator=(Workspace&&) noexcept = default;

namespace {
Region& usable(const std::unique_ptr<Region>& region) {
  if (!region) throw InvalidArgumentError("workspace was moved from");
  return *region;
}
}  // namespace

void* Workspace::data() const noexcept {
  return region_ ? reinterpret_cast<void*>(region_->base()) : nullptr;
}
std::size_t Workspace::size() const noexcept { return region_ ? region_->size() : 0; }
std::size_t Workspace::capacity() const noexcept { return region_ ? region_->capacity() : 0; }
std::size_t Workspace::mapped_bytes() const noexcept {
  return region_ ? region_->mapped_bytes() : 0;
}
int Workspace::device() const noexcept { return region_ ? region_->context().device() : -1; }
TagId Workspace::tag() const noexcept { return region_ ? region_->tag() : 0; }
void Workspace::record_stream(Stream stream) { usable(region_).record_stream(stream); }

// grow and shrink events (allocator/record/event_ring.hpp) carry the size before and
// after; an out-of-memory grow is noted (and may write a snapshot).
void Workspace::grow_to(std::size_t new_size) {
  Region& r = usable(region_);
  const std::size_t before = r.size();
  try {
    r.grow_to(new_size);
  } catch (const OutOfMemoryError&) {
    note_out_of_memory(r.context(), new_size, nullptr, /*workspace=*/true);
    throw;
  }
  if (r.size() != before) {
    events::record_resize(r.context().device(), EventKind::grow, r.base(), r.size(), before);
  }
}
void Workspace::shrink_to(std::size_t new_size, Stream stream) {
  Region& r = usable(region_);
  const std::size_t before = r.size();
  r.shrink_to(new_size, stream);
  if (r.size() != before) {
    events::record_resize(r.context().device(), EventKind::shrink, r.base(), r.size(), before);
  }
}
void Workspace::set_name(std::string_view name) { inspect::set_region_name(usable(region_), name); }
std::string Workspace::name() const {
  return region_ ? inspect::region_name(*region_) : std::string();
}
void Workspace::release(Stream stream) {
  usable(region_).release(stream);
  region_.reset();
}

}  // namespace vmm
