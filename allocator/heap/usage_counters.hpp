// UsageCounters: the heap's bytes allocated and requested, with their peaks,
// counted without a shared write on the hot path.
//
// Each thread keeps its own deltas (a Local, in its thread cache) and moves
// them into the shared totals when one reaches kPublishBytes, as soon as one
// would go below zero (the thread frees blocks another thread allocated),
// and when the thread's cache is handed back. A thread that allocates and
// frees from its cache therefore writes only its own cache line; the shared
// totals and peaks are read there, and written only when a peak rises. (With
// every pair writing shared atomics, 8 threads made fewer pairs per second
// together than one thread alone.)
//
// What is exact:
//   - the current figures (Heap::current_usage: the totals plus every
//     Local's deltas): exact whenever no thread is in the middle of an
//     allocation or free.
//   - the peaks, for one thread: it raises them with the totals plus its own
//     deltas, which is then the whole.
//   - with several threads, each raises the peaks with what it sees (the
//     totals plus its own delta). No delta is below zero, so that is never
//     more than the real total: no peak is counted high. A peak reached by
//     several threads' unpublished deltas at once is counted short by at most
//     kPublishBytes per other thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace vmm::heap {

class UsageCounters {
 public:
  // Either delta of a Local past this moves it into the totals. Above the
  // largest block that commonly cycles through a thread cache, so a hot
  // loop of pairs never publishes.
  static constexpr std::int64_t kPublishBytes = std::int64_t{1} << 30;

  // One thread's unpublished deltas: written by that thread only (relaxed
  // loads and stores, no read-modify-write), read by anyone.
  struct alignas(64) Local {
    std::atomic<std::int64_t> allocated{0};
    std::atomic<std::int64_t> requested{0};
  };

  struct Totals {
    std::int64_t allocated = 0;
    std::int64_t requested = 0;
  };

  // Counts an allocation (positive deltas) or a free (negative) through
  // `local`, or straight into the totals if `local` is null (a thread
  // without a cache: exiting).
  void add(Local* local, std::int64_t allocated, std::int64_t requested) noexcept;
  // Moves `local`'s deltas into the totals (its thread is done with it).
  void publish(Local& local) noexcept;
  // The published totals (add each Local's deltas for the current figures).
  Totals published() const noexcept;

  std::size_t peak_allocated() const noexcept;
  std::size_t peak_requested() const noexcept;
  // The peaks become `current` (reset_peak_stats).
  void reset_peaks(const Totals& current) noexcept;
  // The peak of allocated bytes since the last call (the background trim's
  // demand), restarted from `current`.
  std::size_t take_demand_peak(std::int64_t current) noexcept;

 private:
  void raise(const Totals& seen, bool allocated_rose, bool requested_rose) noexcept;

  alignas(64) std::atomic<std::int64_t> allocated_{0};
  std::atomic<std::int64_t> requested_{0};
  // Read on every hot operation, written only when they rise: a line of
  // their own, so publishing does not invalidate it.
  alignas(64) std::atomic<std::int64_t> peak_allocated_{0};
  std::atomic<std::int64_t> peak_requested_{0};
  std::atomic<std::int64_t> demand_peak_{0};
};

}  // namespace vmm::heap
