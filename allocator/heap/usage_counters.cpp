#include "allocator/heap/usage_counters.hpp"

#include <algorithm>

namespace vmm::heap {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

void raise_max(std::atomic<std::int64_t>& peak, std::int64_t value) noexcept {
  std::int64_t p = peak.load(kRelaxed);
  while (value > p && !peak.compare_exchange_weak(p, value, kRelaxed)) {
  }
}

// A delta is moved into the totals once it reaches kPublishBytes, or as soon
// as it would go below zero (this thread frees more than it allocated: blocks
// another thread allocated). With no delta below zero, the totals plus one
// thread's delta never exceed the real total, so no peak is counted high.
bool must_publish(std::int64_t delta) noexcept {
  return delta >= UsageCounters::kPublishBytes || delta < 0;
}

}  // namespace

void UsageCounters::add(Local* local, std::int64_t allocated, std::int64_t requested) noexcept {
  Totals seen;
  if (local == nullptr) {
    seen.allocated = allocated_.fetch_add(allocated, kRelaxed) + allocated;
    seen.requested = requested_.fetch_add(requested, kRelaxed) + requested;
  } else {
    const std::int64_t da = local->allocated.load(kRelaxed) + allocated;
    const std::int64_t dr = local->requested.load(kRelaxed) + requested;
    if (must_publish(da) || must_publish(dr)) {
      // The deltas are cleared before the totals take them, with release:
      // a reader that sees the new totals (acquire) sees the cleared deltas,
      // so nothing is counted twice.
      local->allocated.store(0, kRelaxed);
      local->requested.store(0, kRelaxed);
      seen.allocated = allocated_.fetch_add(da, std::memory_order_release) + da;
      seen.requested = requested_.fetch_add(dr, std::memory_order_release) + dr;
    } else {
      local->allocated.store(da, kRelaxed);
      local->requested.store(dr, kRelaxed);
      seen.allocated = allocated_.load(kRelaxed) + da;
      seen.requested = requested_.load(kRelaxed) + dr;
    }
  }
  raise(seen, allocated > 0, requested > 0);
}

void UsageCounters::publish(Local& local) noexcept {
  const std::int64_t da = local.allocated.exchange(0, kRelaxed);
  const std::int64_t dr = local.requested.exchange(0, kRelaxed);
  allocated_.fetch_add(da, std::memory_order_release);  // see add()
  requested_.fetch_add(dr, std::memory_order_release);
}

UsageCounters::Totals UsageCounters::published() const noexcept {
  // Acquire: the deltas read after this are at least as new (see add()).
  return {allocated_.load(std::memory_order_acquire), requested_.load(std::memory_order_acquire)};
}

void UsageCounters::raise(const Totals& seen, bool allocated_rose, bool requested_rose) noexcept {
  if (allocated_rose) {
    // Plain loads first: in steady state nothing rises and nothing is written.
    if (seen.allocated > peak_allocated_.load(kRelaxed)) raise_max(peak_allocated_, seen.allocated);
    if (seen.allocated > demand_peak_.load(kRelaxed)) raise_max(demand_peak_, seen.allocated);
  }
  if (requested_rose && seen.requested > peak_requested_.load(kRelaxed)) {
    raise_max(peak_requested_, seen.requested);
  }
}

std::size_t UsageCounters::peak_allocated() const noexcept {
  return static_cast<std::size_t>(std::max<std::int64_t>(0, peak_allocated_.load(kRelaxed)));
}

std::size_t UsageCounters::peak_requested() const noexcept {
  return static_cast<std::size_t>(std::max<std::int64_t>(0, peak_requested_.load(kRelaxed)));
}

void UsageCounters::reset_peaks(const Totals& current) noexcept {
  peak_allocated_.store(current.allocated, kRelaxed);
  peak_requested_.store(current.requested, kRelaxed);
}

std::size_t UsageCounters::take_demand_peak(std::int64_t current) noexcept {
  const std::int64_t p = demand_peak_.exchange(current, kRelaxed);
  return static_cast<std::size_t>(std::max<std::int64_t>({0, p, current}));
}

}  // namespace vmm::heap
