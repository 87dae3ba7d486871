// vmm::Workspace: the public face of a Region (see include/vmmalloc/workspace.hpp).
#include "vmmalloc/workspace.hpp"

#include "allocator/device_context.hpp"
#include "allocator/region.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

Workspace::Workspace(std::size_t capacity, int device)
    : region_(std::make_unique<Region>(device_context(device), capacity)) {}

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

void Workspace::grow_to(std::size_t new_size) { usable(region_).grow_to(new_size); }
void Workspace::shrink_to(std::size_t new_size, Stream stream) {
  usable(region_).shrink_to(new_size, stream);
}
void Workspace::release(Stream stream) {
  usable(region_).release(stream);
  region_.reset();
}

}  // namespace vmm
