// Fork guard: vmmalloc's process-wide state belongs to the process that
// created it. A child made by fork() inherits a copy of that state but none
// of its threads (the reclaimer, the host backend's stream workers, the live
// socket) and, on a GPU, no usable CUDA context (CUDA refuses to run in a
// child forked after it was initialised). Using the copy could hang (waiting
// for a thread that does not exist) or corrupt the parent's memory (the host
// backend's mappings are shared). So once the first device context exists,
// a pthread_atfork child handler marks every child, and from then on:
//   - every C ABI call that reaches the allocator returns
//     VMM_ERROR_NOT_SUPPORTED with forked_child_message();
//   - device_context() throws NotSupportedError (no new state in the child);
//   - every exit-time handler (the reclaimers' stop at exit, an exiting
//     thread's hand-back of its thread caches, the snapshot at exit) returns
//     before taking any lock: a thread of the parent may have held it at the
//     fork, and it would never be released in the child. The child's exit()
//     therefore never waits; what the copy holds goes with the process.
// Objects of the C++ API inherited from the parent (an Allocator& obtained
// before the fork, a Workspace) must not be used in the child: like CUDA's
// own objects there, that is undefined. A child forked before vmmalloc was
// first used has no state to inherit and uses vmmalloc normally, as does any
// program the child execs.
//
// Thread-safety: the flag is an atomic written once, in the child, before
// any of its code runs.
#pragma once

#include <string>

namespace vmm {

// Installs the child handler, once per process (later calls do nothing).
// Called before the first device context is made (under the process
// state's lock), so no thread that could hold one of vmmalloc's locks
// exists yet: every child forked after any such lock exists is marked.
void install_fork_guard() noexcept;

// True in a process forked (directly or not) after install_fork_guard() ran
// in an ancestor. One relaxed atomic load.
bool in_forked_child() noexcept;

// "vmmalloc cannot be used in a child forked (pid C) after it was initialised
// in process P: ..." - what the C ABI reports.
std::string forked_child_message();

}  // namespace vmm
