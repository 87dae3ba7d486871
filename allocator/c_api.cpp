// The C ABI (include/vmmalloc/vmmalloc.h): a thin adapter over the C++ API.
// Every entry point catches everything, turns it into a vmm_status and keeps
// the message for vmm_last_error() in a thread-local string.
#include <exception>
#include <new>
#include <string>

#include "allocator/device_context.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/vmmalloc.h"
#include "vmmalloc/workspace.hpp"

struct vmm_workspace {
  vmm::Workspace workspace;
};

namespace {

thread_local std::string t_last_error;

vmm_status fail(vmm_status status, const char* message) {
  try {
    t_last_error = message;
  } catch (...) {
    // Out of host memory for the message: the status still says what happened.
  }
  return status;
}

// Runs `fn`, mapping every exception to a status.
template <typename Fn>
vmm_status guarded(Fn&& fn) noexcept {
  try {
    fn();
    return VMM_SUCCESS;
  } catch (const vmm::Error& e) {
    return fail(e.status(), e.what());
  } catch (const std::bad_alloc&) {
    return fail(VMM_ERROR_OUT_OF_MEMORY, "out of host memory");
  } catch (const std::exception& e) {
    return fail(VMM_ERROR_INTERNAL, e.what());
  } catch (...) {
    return fail(VMM_ERROR_INTERNAL, "unknown exception");
  }
}

vmm_status null_argument(const char* what) {
  return fail(VMM_ERROR_INVALID_VALUE, (std::string(what) + " is NULL").c_str());
}

}  // namespace

extern "C" {

const char* vmm_last_error(void) { return t_last_error.c_str(); }

const char* vmm_status_name(vmm_status status) {
  switch (status) {
    case VMM_SUCCESS: return "VMM_SUCCESS";
    case VMM_ERROR_OUT_OF_MEMORY: return "VMM_ERROR_OUT_OF_MEMORY";
    case VMM_ERROR_INVALID_VALUE: return "VMM_ERROR_INVALID_VALUE";
    case VMM_ERROR_DRIVER: return "VMM_ERROR_DRIVER";
    case VMM_ERROR_CONFIG: return "VMM_ERROR_CONFIG";
    case VMM_ERROR_NOT_SUPPORTED: return "VMM_ERROR_NOT_SUPPORTED";
    case VMM_ERROR_UNKNOWN_POINTER: return "VMM_ERROR_UNKNOWN_POINTER";
    case VMM_ERROR_INTERNAL: return "VMM_ERROR_INTERNAL";
  }
  return "VMM_ERROR_UNKNOWN_STATUS";
}

vmm_status vmm_configure(const char* conf) {
  if (conf == nullptr) return null_argument("conf");
  return guarded([&] { vmm::configure_process(vmm::Config::parse(conf)); });
}

vmm_status vmm_backend_name(int device, const char** name) {
  if (name == nullptr) return null_argument("name");
  return guarded([&] { *name = vmm::device_context(device).backend().name(); });
}

vmm_status vmm_workspace_create(size_t max_bytes, int device, vmm_workspace** out) {
  if (out == nullptr) return null_argument("out");
  *out = nullptr;
  return guarded([&] { *out = new vmm_workspace{vmm::Workspace(max_bytes, device)}; });
}

vmm_status vmm_workspace_grow(vmm_workspace* ws, size_t new_size) {
  if (ws == nullptr) return null_argument("workspace");
  return guarded([&] { ws->workspace.grow_to(new_size); });
}

vmm_status vmm_workspace_shrink(vmm_workspace* ws, size_t new_size, vmm_stream_t stream) {
  if (ws == nullptr) return null_argument("workspace");
  return guarded([&] { ws->workspace.shrink_to(new_size, stream); });
}

vmm_status vmm_workspace_data(const vmm_workspace* ws, void** data) {
  if (ws == nullptr) return null_argument("workspace");
  if (data == nullptr) return null_argument("data");
  *data = ws->workspace.data();
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_size(const vmm_workspace* ws, size_t* size) {
  if (ws == nullptr) return null_argument("workspace");
  if (size == nullptr) return null_argument("size");
  *size = ws->workspace.size();
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_capacity(const vmm_workspace* ws, size_t* capacity) {
  if (ws == nullptr) return null_argument("workspace");
  if (capacity == nullptr) return null_argument("capacity");
  *capacity = ws->workspace.capacity();
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_mapped_bytes(const vmm_workspace* ws, size_t* mapped) {
  if (ws == nullptr) return null_argument("workspace");
  if (mapped == nullptr) return null_argument("mapped");
  *mapped = ws->workspace.mapped_bytes();
  return VMM_SUCCESS;
}

vmm_status vmm_workspace_destroy(vmm_workspace* ws, vmm_stream_t stream) {
  if (ws == nullptr) return VMM_SUCCESS;
  const vmm_status status = guarded([&] { ws->workspace.release(stream); });
  if (status == VMM_SUCCESS) delete ws;  // on failure the caller still owns it, intact
  return status;
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
    *stats = vmm_allocator_stats{s.allocated_bytes,  s.peak_allocated_bytes, s.requested_bytes,
                                 s.peak_requested_bytes, s.reserved_bytes, s.peak_reserved_bytes,
                                 s.mapped_bytes,     s.cached_bytes,         s.pending_bytes,
                                 s.inactive_split_bytes, s.active_blocks,  s.allocations,
                                 s.frees,            s.stitches,             s.chunk_creates,
                                 s.chunk_releases,   s.ooms};
  });
}

}  // extern "C"
