// SpinLock: a lock for the short critical sections of the allocation hot
// path (a pointer shard's lookup, a thread cache's push or pop).
//
// Taking it is one atomic exchange and releasing it one store; std::mutex
// costs two read-modify-writes (glibc's lock and unlock), which on the hot
// path is a sizeable part of an allocate+free pair. A waiter spins briefly
// (with the CPU's pause hint) and then yields its time slice, so a holder
// that was preempted (more threads than cores) is not starved. Meets
// BasicLockable and Lockable (std::lock_guard, std::unique_lock).
#pragma once

#include <atomic>
#include <thread>

namespace vmm {

class SpinLock {
 public:
  void lock() noexcept {
    while (flag_.exchange(true, std::memory_order_acquire)) {
      for (int spins = 0; flag_.load(std::memory_order_relaxed); ++spins) {
        if (spins < kSpinsBeforeYield) {
          pause();
        } else {
          std::this_thread::yield();
        }
      }
    }
  }
  bool try_lock() noexcept {
    return !flag_.load(std::memory_order_relaxed) &&
           !flag_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { flag_.store(false, std::memory_order_release); }

 private:
  static constexpr int kSpinsBeforeYield = 64;
  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
  }

  std::atomic<bool> flag_{false};
};

}  // namespace vmm
