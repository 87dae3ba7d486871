// LiveHandles: the C ABI's handles (vmm_workspace, vmm_workspace_export,
// vmm_workspace_import) that are live - returned by a create call and not
// yet destroyed - by address and kind. Every call that takes a handle
// looks it up first, so one destroyed already (a double destroy, a use
// after destroy) or of the wrong kind is VMM_ERROR_INVALID_VALUE instead of
// a use of freed memory, as a double free of a block is
// VMM_ERROR_UNKNOWN_POINTER. Limit: the address of a destroyed handle may be
// reused by a later create; the stale pointer then names the new object.
//
// Thread-safety: one mutex over the set (calls that take handles are not on
// the allocation hot path). Never destroyed (calls may come from exit
// handlers). In a forked child it is not consulted at all (a thread of the
// parent may have held its lock at the fork): contains() is true there, and
// the calls that reach the allocator refuse the child anyway
// (fork_guard.hpp).
#pragma once

#include <mutex>
#include <unordered_map>

namespace vmm::capi {

enum class HandleKind : unsigned char { workspace, workspace_export, workspace_import };

class LiveHandles {
 public:
  // The process's set.
  static LiveHandles& get();

  // Records a handle just created. Throws std::bad_alloc (then the caller
  // destroys the object and reports VMM_ERROR_OUT_OF_MEMORY).
  void add(const void* handle, HandleKind kind);
  // Whether `handle` is live as a `kind` (always true in a forked child).
  bool contains(const void* handle, HandleKind kind);

  // Takes a handle out of the set while its destroy runs, so a second
  // destroy (even a concurrent one) finds it gone. Empty if it was not live.
  using Taken = std::unordered_map<const void*, HandleKind>::node_type;
  Taken take(const void* handle, HandleKind kind);
  // Puts back a handle whose destroy failed (it stays the caller's). The
  // node is reused, so nothing is allocated for it.
  void put_back(Taken taken) noexcept;

 private:
  LiveHandles() = default;
  std::mutex mutex_;
  std::unordered_map<const void*, HandleKind> live_;
};

// "workspace", "workspace export", "workspace import".
const char* handle_kind_name(HandleKind kind) noexcept;

}  // namespace vmm::capi
