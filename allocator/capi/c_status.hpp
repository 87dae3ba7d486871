// How the C ABI's files turn C++ failures into a vmm_status and the calling
// thread's vmm_last_error() message. The message lives in c_api.cpp (next
// to vmm_last_error); set_last_error() is the way in for the other files of
// the C ABI (c_sleep.cpp), so every entry point reports the same way.
#pragma once

#include <exception>
#include <new>
#include <string>

#include "allocator/base/fork_guard.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/vmmalloc.h"

namespace vmm::capi {

// Makes `message` the calling thread's vmm_last_error() text (kept as it
// was if host memory is short for the copy) and returns `status`.
vmm_status set_last_error(vmm_status status, const char* message) noexcept;

inline vmm_status null_argument(const char* what) noexcept {
  try {
    return set_last_error(VMM_ERROR_INVALID_VALUE, (std::string(what) + " is NULL").c_str());
  } catch (...) {
    return set_last_error(VMM_ERROR_INVALID_VALUE, "an argument is NULL");
  }
}

// Runs `fn`, mapping every exception to a status: vmm::Error to its own,
// std::bad_alloc to VMM_ERROR_OUT_OF_MEMORY, anything else to
// VMM_ERROR_INTERNAL. In a forked child nothing runs (fork_guard.hpp).
template <typename Fn>
vmm_status guarded(Fn&& fn) noexcept {
  try {
    if (in_forked_child()) {
      return set_last_error(VMM_ERROR_NOT_SUPPORTED, forked_child_message().c_str());
    }
    fn();
    return VMM_SUCCESS;
  } catch (const Error& e) {
    return set_last_error(e.status(), e.what());
  } catch (const std::bad_alloc&) {
    return set_last_error(VMM_ERROR_OUT_OF_MEMORY, "out of host memory");
  } catch (const std::exception& e) {
    return set_last_error(VMM_ERROR_INTERNAL, e.what());
  } catch (...) {
    return set_last_error(VMM_ERROR_INTERNAL, "unknown exception");
  }
}

}  // namespace vmm::capi
