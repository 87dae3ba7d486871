// vmm_spin_lock_tsan_probe: proves that ThreadSanitizer sees SpinLock as a
// mutex (allocator/base/spin_lock.hpp's __tsan_mutex_* annotations). One
// thread takes lock A then B, a later one B then A: never a deadlock here
// (the threads run one after the other), but a lock-order inversion that
// TSan reports for mutexes it knows - and cannot see for a bare atomic flag.
// Built and run only in the TSan build; the CTest passes when TSan's report
// names the inversion.
#include <cstdio>
#include <mutex>
#include <thread>

#include "allocator/base/spin_lock.hpp"

int main() {
  vmm::SpinLock a;
  vmm::SpinLock b;
  int guarded = 0;
  std::thread first([&] {
    std::lock_guard la(a);
    std::lock_guard lb(b);
    ++guarded;
  });
  first.join();
  std::thread second([&] {
    std::lock_guard lb(b);
    std::lock_guard la(a);
    ++guarded;
  });
  second.join();
  std::printf("spin lock probe: %d critical sections, no report from TSan\n", guarded);
  return 0;
}
