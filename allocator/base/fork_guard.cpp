// Fork guard (see fork_guard.hpp): one pthread_atfork child handler, a flag
// and the pid of the process that initialised vmmalloc.
#include "allocator/base/fork_guard.hpp"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

namespace vmm {
namespace {

std::atomic<bool> g_forked_child{false};
std::atomic<pid_t> g_owner_pid{0};  // the process whose state this is

// Runs in the child right after fork(), before fork() returns there: only
// async-signal-safe work (atomic stores).
void mark_child() noexcept { g_forked_child.store(true, std::memory_order_relaxed); }

}  // namespace

void install_fork_guard() noexcept {
  static std::once_flag once;
  std::call_once(once, [] {
    g_owner_pid.store(::getpid(), std::memory_order_relaxed);
    (void)::pthread_atfork(nullptr, nullptr, mark_child);  // fails only without memory
  });
}

bool in_forked_child() noexcept { return g_forked_child.load(std::memory_order_relaxed); }

std::string forked_child_message() {
  return "vmmalloc cannot be used in a child forked (pid " + std::to_string(::getpid()) +
         ") after it was initialised in process " +
         std::to_string(g_owner_pid.load(std::memory_order_relaxed)) +
         ": the child has none of its threads and no usable CUDA context; use vmmalloc in the "
         "child only if the parent had not used it yet, or exec a new program";
}

}  // namespace vmm
