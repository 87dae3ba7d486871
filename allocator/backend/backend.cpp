// Names of the backend call kinds, for messages, fault injection and
// counters; the defaults of Backend's optional calls.
#include "allocator/backend/backend.hpp"

#include <string>

#include "vmmalloc/errors.hpp"

namespace vmm {

const char* backend_call_name(BackendCall call) noexcept {
  switch (call) {
    case BackendCall::reserve:
      return "reserve";
    case BackendCall::free_va:
      return "free_va";
    case BackendCall::create:
      return "create";
    case BackendCall::release:
      return "release";
    case BackendCall::map:
      return "map";
    case BackendCall::unmap:
      return "unmap";
    case BackendCall::set_access:
      return "set_access";
    case BackendCall::record_fence:
      return "record_fence";
    case BackendCall::query_fence:
      return "query_fence";
    case BackendCall::wait_fence:
      return "wait_fence";
    case BackendCall::can_access_peer:
      return "can_access_peer";
    case BackendCall::export_handle:
      return "export_handle";
    case BackendCall::import_handle:
      return "import_handle";
    case BackendCall::alloc_pinned:
      return "alloc_pinned";
    case BackendCall::create_stream:
      return "create_stream";
    case BackendCall::copy:
      return "copy";
    case BackendCall::count_:
      break;
  }
  return "unknown";
}

void Backend::synchronize_device() {
  throw NotSupportedError(std::string(name()) + " backend: no device-wide synchronize");
}

}  // namespace vmm
