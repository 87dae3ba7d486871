// SpinLock: a lock for the short critical sections of the allocation hot
// path (a pointer shard's lookup, a thread cache's push or pop).
//
// Taking it is one atomic exchange and releasing it one store; std::mutex
// costs two read-modify-writes (glibc's lock and unlock), which on the hot
// path is a sizeable part of an allocate+free pair. A waiter spins briefly
// (with the CPU's pause hint) and then yields its time slice, so a holder
// that was preempted (more threads than cores) is not starved. Meets
// BasicLockable and Lockable (std::lock_guard, std::unique_lock).
//
// Under ThreadSanitizer the lock tells it what it is (__tsan_mutex_*
// annotations): TSan then checks it as a mutex - lock-order inversions,
// unlocks by a thread that does not hold it, double locks - and reports
// races on the data it guards with the lock named, as it does for
// std::mutex; the atomics alone only order memory.
#pragma once

#include <atomic>
#include <thread>

#if defined(__SANITIZE_THREAD__)
#define VMM_TSAN_MUTEX 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VMM_TSAN_MUTEX 1
#endif
#endif

#ifdef VMM_TSAN_MUTEX
#include <sanitizer/tsan_interface.h>  // ships with GCC's and clang's TSan runtime
#endif

namespace vmm {

class SpinLock {
 public:
#ifdef VMM_TSAN_MUTEX
  SpinLock() noexcept { __tsan_mutex_create(this, 0); }
  ~SpinLock() { __tsan_mutex_destroy(this, 0); }
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;
#endif

  void lock() noexcept {
#ifdef VMM_TSAN_MUTEX
    __tsan_mutex_pre_lock(this, 0);
#endif
    while (flag_.exchange(true, std::memory_order_acquire)) {
      for (int spins = 0; flag_.load(std::memory_order_relaxed); ++spins) {
        if (spins < kSpinsBeforeYield) {
          pause();
        } else {
          std::this_thread::yield();
        }
      }
    }
#ifdef VMM_TSAN_MUTEX
    __tsan_mutex_post_lock(this, 0, 0);
#endif
  }
  bool try_lock() noexcept {
#ifdef VMM_TSAN_MUTEX
    __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
#endif
    const bool locked =
        !flag_.load(std::memory_order_relaxed) && !flag_.exchange(true, std::memory_order_acquire);
#ifdef VMM_TSAN_MUTEX
    __tsan_mutex_post_lock(
        this, locked ? __tsan_mutex_try_lock : __tsan_mutex_try_lock | __tsan_mutex_try_lock_failed,
        0);
#endif
    return locked;
  }
  void unlock() noexcept {
#ifdef VMM_TSAN_MUTEX
    __tsan_mutex_pre_unlock(this, 0);
#endif
    flag_.store(false, std::memory_order_release);
#ifdef VMM_TSAN_MUTEX
    __tsan_mutex_post_unlock(this, 0);
#endif
  }

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
