// The C ABI (include/vmmalloc/vmmalloc.h): a thin adapter over the C++ API.
// Every entry point catches everything, turns it into a vmm_status and keeps
// the message for vmm_last_error() in a thread-local string.
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "allocator/base/fork_guard.hpp"
#include "allocator/capi/c_status.hpp"
#include "allocator/capi/live_handles.hpp"
#include "allocator/observe/process_context.hpp"
#include "allocator/vm/device_context.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/ipc.hpp"
#include "vmmalloc/peer_access.hpp"
#include "vmmalloc/snapshot.hpp"
#include "vmmalloc/vmmalloc.h"
#include "vmmalloc/workspace.hpp"

struct vmm_workspace {
  vmm::Workspace workspace;
};

struct vmm_workspace_export {
  vmm::WorkspaceExport share;
};

struct vmm_workspace_import {
  vmm::WorkspaceImport import;
};

// vmm_allocator_stats is plain C and keeps its own declaration; it must hold
// every counter of VMM_ALLOCATOR_STATS, at the same place. A counter added to
// the list but not to the C struct fails to compile in
// vmm_get_allocator_stats; one out of place or of another size fails here.
#define VMM_CHECK_C_STAT_(type, name, key, meaning)                                           \
  static_assert(offsetof(vmm_allocator_stats, name) == offsetof(vmm::AllocatorStats, name) && \
                    sizeof(vmm_allocator_stats::name) == sizeof(vmm::AllocatorStats::name),   \
                "vmm_allocator_stats." #name " differs from vmm::AllocatorStats");
VMM_ALLOCATOR_STATS(VMM_CHECK_C_STAT_)
#undef VMM_CHECK_C_STAT_
static_assert(sizeof(vmm_allocator_stats) == sizeof(vmm::AllocatorStats),
              "vmm_allocator_stats has a field VMM_ALLOCATOR_STATS lacks");

namespace {

thread_local std::string t_last_error;

}  // namespace

// Every file of the C ABI reports through this thread-local message
// (c_status.hpp: guarded() and null_argument() come through here).
vmm_status vmm::capi::set_last_error(vmm_status status, const char* message) noexcept {
  try {
    t_last_error = message;
  } catch (...) {
    // Out of host memory for the message: the status still says what happened.
  }
  return status;
}

namespace {

using vmm::capi::guarded;
using vmm::capi::null_argument;
using vmm::capi::set_last_error;
using vmm::capi::HandleKind;
using vmm::capi::LiveHandles;

// A handle that is not live: destroyed already, or never returned by a
// create call (live_handles.hpp).
vmm_status not_live(const char* call, const void* handle, HandleKind kind) {
  char text[160];
  std::snprintf(text, sizeof text,
                "%s: %s handle %p is not live (destroyed already, or not returned by "
                "vmm_%s_create)",
                call, vmm::capi::handle_kind_name(kind), handle,
                kind == HandleKind::workspace          ? "workspace"
                : kind == HandleKind::workspace_export ? "workspace_export"
                                                       : "workspace_import");
  return set_last_error(VMM_ERROR_INVALID_VALUE, text);
}

// Checks a handle argument: NULL or not live is VMM_ERROR_INVALID_VALUE.
// VMM_SUCCESS if it may be used.
vmm_status check_handle(const char* call, const void* handle, HandleKind kind, const char* what) {
  if (handle == nullptr) return null_argument(what);
  if (!LiveHandles::get().contains(handle, kind)) return not_live(call, handle, kind);
  return VMM_SUCCESS;
}

// Creates a handle with `make` (inside guarded()) and records it as live.
template <typename T, typename Make>
vmm_status create_handle(T** out, HandleKind kind, Make&& make) {
  return guarded([&] {
    std::unique_ptr<T> handle(make());
    LiveHandles::get().add(handle.get(), kind);
    *out = handle.release();
  });
}

// Destroys a live handle: `close` (inside guarded()) releases what it holds,
// then it is deleted. A handle not live is VMM_ERROR_INVALID_VALUE; on a
// failed close it stays live and the caller's. In a forked child nothing is
// touched (VMM_ERROR_NOT_SUPPORTED, as every call that reaches the
// allocator there).
template <typename T, typename Close>
vmm_status destroy_handle(const char* call, T* handle, HandleKind kind, Close&& close) {
  if (handle == nullptr) return VMM_SUCCESS;
  if (vmm::in_forked_child()) return guarded([] {});
  LiveHandles::Taken taken = LiveHandles::get().take(handle, kind);
  if (taken.empty()) return not_live(call, handle, kind);
  const vmm_status status = guarded([&] { close(*handle); });
  if (status != VMM_SUCCESS) {
    LiveHandles::get().put_back(std::move(taken));
    return status;
  }
  delete handle;
  return VMM_SUCCESS;
}

// A stream handed to vmm_free or vmm_record_stream must be one work can be
// queued on: fences are recorded on it later, and a handle that is no
// stream would leave the block waiting for a device-wide synchronize
// (heap/stream_use.hpp). Refused before anything changes.
void check_stream(const char* call, vmm::Allocator& owner, vmm_stream_t stream) {
  if (stream == nullptr || owner.context().backend().stream_exists(stream)) return;
  char text[200];
  std::snprintf(text, sizeof text,
                "%s: stream %p is no stream of device %d (never created, or destroyed); "
                "nothing changed",
                call, static_cast<void*>(stream), owner.device());
  throw vmm::InvalidArgumentError(text);
}

constexpr HandleKind kWorkspace = HandleKind::workspace;
constexpr HandleKind kExport = HandleKind::workspace_export;
constexpr HandleKind kImport = HandleKind::workspace_import;

}  // namespace

extern "C" {

const char* vmm_last_error(void) { return t_last_error.c_str(); }

const char* vmm_status_name(vmm_status status) {
  switch (status) {
    case VMM_SUCCESS:
      return "VMM_SUCCESS";
    case VMM_ERROR_OUT_OF_MEMORY:
      return "VMM_ERROR_OUT_OF_MEMORY";
    case VMM_ERROR_INVALID_VALUE:
      return "VMM_ERROR_INVALID_VALUE";
    case VMM_ERROR_DRIVER:
      return "VMM_ERROR_DRIVER";
    case VMM_ERROR_CONFIG:
      return "VMM_ERROR_CONFIG";
    case VMM_ERROR_NOT_SUPPORTED:
      return "VMM_ERROR_NOT_SUPPORTED";
    case VMM_ERROR_UNKNOWN_POINTER:
      return "VMM_ERROR_UNKNOWN_POINTER";
    case VMM_ERROR_INTERNAL:
      return "VMM_ERROR_INTERNAL";
  }
  return "VMM_ERROR_UNKNOWN_STATUS";
}

vmm_status vmm_configure(const char* conf) {
  if (conf == nullptr) return null_argument("conf");
  return guarded([&] { vmm::configure_process(vmm::Config::parse(conf)); });
}

vmm_status vmm_backend_name(int device, const char** name) {
  if (name == nullptr) return null_argument("name");
  return guarded([&] { *name = vmm::process_context(device).backend().name(); });
}

vmm_status vmm_workspace_create(size_t max_bytes, int device, vmm_workspace** out) {
  if (out == nullptr) return null_argument("out");
  *out = nullptr;
  return create_handle(out, kWorkspace,
                       [&] { return new vmm_workspace{vmm::Workspace(max_bytes, device)}; });
}

vmm_status vmm_workspace_grow(vmm_workspace* ws, size_t new_size) {
  if (vmm_status s = check_handle(__func__, ws, kWorkspace, "workspace")) return s;
  return guarded([&] { ws->workspace.grow_to(new_size); });
}

vmm_status vmm_workspace_shrink(vmm_workspace* ws, size_t new_size, vmm_stream_t stream) {
  if (vmm_status s = check_handle(__func__, ws, kWorkspace, "workspace")) return s;
  return guarded([&] { ws->workspace.shrink_to(new_size, stream); });
}

vmm_status vmm_workspace_data(const vmm_workspace* ws, void** data) {
  if (vmm_status s = check_handle(__func__, ws, kWorkspace, "workspace")) return s;
  if (data == nullptr) return null_argument("data");
  *data = ws->workspace.data();
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_size(const vmm_workspace* ws, size_t* size) {
  if (vmm_status s = check_handle(__func__, ws, kWorkspace, "workspace")) return s;
  if (size == nullptr) return null_argument("size");
  *size = ws->workspace.size();
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_capacity(const vmm_workspace* ws, size_t* capacity) {
  if (vmm_status s = check_handle(__func__, ws, kWorkspace, "workspace")) return s;
  if (capacity == nullptr) return null_argument("capacity");
  *capacity = ws->workspace.capacity();
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_mapped_bytes(const vmm_workspace* ws, size_t* mapped) {
  if (vmm_status s = check_handle(__func__, ws, kWorkspace, "workspace")) return s;
  if (mapped == nullptr) return null_argument("mapped");
  *mapped = ws->workspace.mapped_bytes();
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_destroy(vmm_workspace* ws, vmm_stream_t stream) {
  // On failure the caller still owns it, intact.
  return destroy_handle(__func__, ws, kWorkspace,
                        [&](vmm_workspace& w) { w.workspace.release(stream); });
}

vmm_status vmm_malloc(void** ptr, size_t bytes, int device, vmm_stream_t stream) {
  if (ptr == nullptr) return null_argument("ptr");
  *ptr = nullptr;
  return guarded([&] { *ptr = vmm::Allocator::instance(device).allocate(bytes, stream); });
}

vmm_status vmm_free(void* ptr, vmm_stream_t stream) {
  if (ptr == nullptr) return VMM_SUCCESS;
  return guarded([&] {
    vmm::Allocator* owner = vmm::Allocator::owner_of(ptr);
    if (owner == nullptr) {
      throw vmm::UnknownPointerError(
          "vmm_free: pointer is not a live vmmalloc block (double free or foreign pointer)");
    }
    if (stream == nullptr) {
      owner->deallocate(ptr);
    } else {
      check_stream("vmm_free", *owner, stream);
      owner->deallocate(ptr, stream);
    }
  });
}

vmm_status vmm_record_stream(void* ptr, vmm_stream_t stream) {
  return guarded([&] {
    vmm::Allocator* owner = vmm::Allocator::owner_of(ptr);
    if (owner == nullptr) {
      throw vmm::UnknownPointerError("vmm_record_stream: pointer is not a live vmmalloc block");
    }
    check_stream("vmm_record_stream", *owner, stream);
    owner->record_stream(ptr, stream);
  });
}

vmm_status vmm_release_stream(vmm_stream_t stream) {
  return guarded([&] { vmm::Allocator::release_stream_everywhere(stream); });
}

vmm_status vmm_empty_cache(int device, size_t* released) {
  return guarded([&] {
    const std::size_t n = vmm::Allocator::instance(device).empty_cache();
    if (released != nullptr) *released = n;
  });
}

vmm_status vmm_set_memory_fraction(int device, double fraction) {
  return guarded([&] { vmm::Allocator::instance(device).set_memory_fraction(fraction); });
}

vmm_status vmm_get_memory_fraction(int device, double* fraction) {
  if (fraction == nullptr) return null_argument("fraction");
  return guarded([&] { *fraction = vmm::Allocator::instance(device).memory_fraction(); });
}

vmm_status vmm_block_size(const void* ptr, size_t* bytes) {
  if (bytes == nullptr) return null_argument("bytes");
  return guarded([&] {
    vmm::Allocator* owner = vmm::Allocator::owner_of(ptr);
    if (owner == nullptr) {
      throw vmm::UnknownPointerError("vmm_block_size: pointer is not a live vmmalloc block");
    }
    *bytes = owner->block_size(ptr);
  });
}

vmm_status vmm_get_allocator_stats(int device, vmm_allocator_stats* stats) {
  if (stats == nullptr) return null_argument("stats");
  return guarded([&] {
    const vmm::AllocatorStats s = vmm::Allocator::instance(device).stats();
    vmm_allocator_stats out{};
#define VMM_COPY_STAT_(type, name, key, meaning) out.name = s.name;
    VMM_ALLOCATOR_STATS(VMM_COPY_STAT_)
#undef VMM_COPY_STAT_
    *stats = out;
  });
}

vmm_status vmm_snapshot_json(char** json, size_t* length) {
  if (json == nullptr) return null_argument("json");
  *json = nullptr;
  return guarded([&] {
    const std::string text = vmm::snapshot_json();
    char* out = static_cast<char*>(std::malloc(text.size() + 1));
    if (out == nullptr) throw std::bad_alloc();
    std::memcpy(out, text.c_str(), text.size() + 1);
    *json = out;
    if (length != nullptr) *length = text.size();
  });
}

void vmm_snapshot_free(char* json) { std::free(json); }

vmm_status vmm_snapshot_write(const char* path) {
  if (path == nullptr) return null_argument("path");
  return guarded([&] { vmm::write_snapshot(path); });
}

vmm_status vmm_set_allocation_events(int enabled) {
  vmm::set_allocation_events(enabled != 0);
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_set_name(vmm_workspace* ws, const char* name) {
  if (vmm_status s = check_handle(__func__, ws, kWorkspace, "workspace")) return s;
  if (name == nullptr) return null_argument("name");
  return guarded([&] { ws->workspace.set_name(name); });
}

vmm_status vmm_workspace_record_stream(vmm_workspace* ws, vmm_stream_t stream) {
  if (vmm_status s = check_handle(__func__, ws, kWorkspace, "workspace")) return s;
  return guarded([&] { ws->workspace.record_stream(stream); });
}

vmm_status vmm_can_access_peer(int device, int peer, int* can_access) {
  if (can_access == nullptr) return null_argument("can_access");
  return guarded([&] { *can_access = vmm::can_access_peer(device, peer) ? 1 : 0; });
}

vmm_status vmm_enable_peer_access(int device, int peer) {
  return guarded([&] { vmm::enable_peer_access(device, peer); });
}

vmm_status vmm_workspace_export_create(vmm_workspace* ws, vmm_workspace_export** out) {
  if (vmm_status s = check_handle(__func__, ws, kWorkspace, "workspace")) return s;
  if (out == nullptr) return null_argument("out");
  *out = nullptr;
  return create_handle(
      out, kExport, [&] { return new vmm_workspace_export{vmm::WorkspaceExport(ws->workspace)}; });
}

vmm_status vmm_workspace_export_serve(vmm_workspace_export* ex, int socket) {
  if (vmm_status s = check_handle(__func__, ex, kExport, "export")) {
    if (socket >= 0) ::close(socket);  // taken over even on failure
    return s;
  }
  return guarded([&] { ex->share.serve(socket); });
}

vmm_status vmm_workspace_export_destroy(vmm_workspace_export* ex) {
  return destroy_handle(__func__, ex, kExport, [](vmm_workspace_export&) {});
}

vmm_status vmm_workspace_import_create(int socket, int device, vmm_workspace_import** out) {
  if (out == nullptr) {
    if (socket >= 0) ::close(socket);
    return null_argument("out");
  }
  *out = nullptr;
  return create_handle(
      out, kImport, [&] { return new vmm_workspace_import{vmm::WorkspaceImport(socket, device)}; });
}

vmm_status vmm_workspace_import_update(vmm_workspace_import* im, vmm_stream_t stream) {
  if (vmm_status s = check_handle(__func__, im, kImport, "import")) return s;
  return guarded([&] { im->import.update(stream); });
}

vmm_status vmm_workspace_import_data(const vmm_workspace_import* im, void** data) {
  if (vmm_status s = check_handle(__func__, im, kImport, "import")) return s;
  if (data == nullptr) return null_argument("data");
  *data = im->import.data();
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_import_size(const vmm_workspace_import* im, size_t* size) {
  if (vmm_status s = check_handle(__func__, im, kImport, "import")) return s;
  if (size == nullptr) return null_argument("size");
  *size = im->import.size();
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_import_capacity(const vmm_workspace_import* im, size_t* capacity) {
  if (vmm_status s = check_handle(__func__, im, kImport, "import")) return s;
  if (capacity == nullptr) return null_argument("capacity");
  *capacity = im->import.capacity();
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_import_destroy(vmm_workspace_import* im, vmm_stream_t stream) {
  // On failure the caller still owns it, intact.
  return destroy_handle(__func__, im, kImport,
                        [&](vmm_workspace_import& i) { i.import.close(stream); });
}

}  // extern "C"
