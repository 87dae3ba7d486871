// LiveHandles: see live_handles.hpp.
#include "allocator/capi/live_handles.hpp"

#include "allocator/base/fork_guard.hpp"

namespace vmm::capi {

LiveHandles& LiveHandles::get() {
  static LiveHandles* handles = new LiveHandles();  // never destroyed: see the header
  return *handles;
}

void LiveHandles::add(const void* handle, HandleKind kind) {
  std::lock_guard lock(mutex_);
  live_.insert_or_assign(handle, kind);
}

bool LiveHandles::contains(const void* handle, HandleKind kind) {
  if (in_forked_child()) return true;  // not consulted there: see the header
  std::lock_guard lock(mutex_);
  auto it = live_.find(handle);
  return it != live_.end() && it->second == kind;
}

LiveHandles::Taken LiveHandles::take(const void* handle, HandleKind kind) {
  std::lock_guard lock(mutex_);
  auto it = live_.find(handle);
  if (it == live_.end() || it->second != kind) return {};
  return live_.extract(it);
}

void LiveHandles::put_back(Taken taken) noexcept {
  if (taken.empty()) return;
  std::lock_guard lock(mutex_);
  live_.insert(std::move(taken));
}

const char* handle_kind_name(HandleKind kind) noexcept {
  switch (kind) {
    case HandleKind::workspace:
      return "workspace";
    case HandleKind::workspace_export:
      return "workspace export";
    case HandleKind::workspace_import:
      return "workspace import";
  }
  return "handle";
}

}  // namespace vmm::capi
