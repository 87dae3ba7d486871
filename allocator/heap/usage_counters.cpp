#include "allocator/heap/usage_counters.hpp"

#include <algorithm>

namespace vmm::heap {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr int kQ = UsageCounters::kQuantities;

void raise_max(std::atomic<std::int64_t>& peak, std::int64_t value) noexcept {
  std::int64_t p = peak.load(kRelaxed);
  while (value > p && !peak.compare_exchange_weak(p, value, kRelaxed)) {
  }
}

// Plain load first: nothing is written unless the peak rises.
void raise_to(std::atomic<std::int64_t>& peak, std::int64_t value) noexcept {
  if (value > peak.load(kRelaxed)) raise_max(peak, value);
}

}  // namespace

void UsageCounters::Usage::sum_kinds() noexcept {
  Figures all;
  for (int k = 0; k < kSizeKinds; ++k) {
    for (int q = 0; q < kQ; ++q) {
      all.current[q] += of[k].current[q];
      all.total[q] += of[k].total[q];
    }
  }
  of[kAll] = all;
}

void UsageCounters::allocated_shared(int k, std::int64_t bytes, std::int64_t requested) noexcept {
  const std::int64_t add[kQ] = {bytes, requested, 1};
  Seen seen;
  for (int q = 0; q < kQ; ++q) {
    total_[k][q].fetch_add(static_cast<std::uint64_t>(add[q]), kRelaxed);
    seen[k][q] = current_[k][q].fetch_add(add[q], kRelaxed) + add[q];
    seen[1 - k][q] = current_[1 - k][q].load(kRelaxed);
  }
  changed();
  raise(k, seen);
}

void UsageCounters::publish_and_raise(Local& local, int kind) noexcept {
  Seen seen;
  for (int j = 0; j < kSizeKinds; ++j) publish_kind(local.kind[j], j, seen[j]);
  raise(kind, seen);
}

void UsageCounters::freed_shared(int k, std::int64_t bytes, std::int64_t requested) noexcept {
  current_[k][kBytes].fetch_sub(bytes, kRelaxed);
  current_[k][kRequested].fetch_sub(requested, kRelaxed);
  current_[k][kBlocks].fetch_sub(1, kRelaxed);
  changed();
}

void UsageCounters::publish_kind(Local::Kind& local, int kind,
                                 std::int64_t (&seen)[kQuantities]) noexcept {
  std::int64_t d[kQ];
  for (int q = 0; q < kQ; ++q) {
    const std::uint64_t in = local.in[q].load(kRelaxed);
    d[q] = static_cast<std::int64_t>(in - local.out[q].load(kRelaxed));
    local.out[q].store(in, kRelaxed);
  }
  // The delta is cleared (out = in) before the totals take it, with
  // release: a reader that sees the new totals (acquire) sees the cleared
  // delta, so nothing is counted twice.
  for (int q = 0; q < kQ; ++q) {
    seen[q] = current_[kind][q].fetch_add(d[q], std::memory_order_release) + d[q];
  }
  changed();
}

void UsageCounters::publish(Local& local) noexcept {
  for (int k = 0; k < kSizeKinds; ++k) {
    for (int q = 0; q < kQ; ++q) {
      const std::uint64_t in = local.kind[k].in[q].exchange(0, kRelaxed);
      const std::uint64_t out = local.kind[k].out[q].exchange(0, kRelaxed);
      total_[k][q].fetch_add(in, std::memory_order_release);  // see publish_kind()
      current_[k][q].fetch_add(static_cast<std::int64_t>(in - out), std::memory_order_release);
    }
  }
  changed();
}

UsageCounters::Usage UsageCounters::published() const noexcept {
  // Acquire: the Locals read after this are at least as new (publish_kind).
  Usage u;
  for (int k = 0; k < kSizeKinds; ++k) {
    for (int q = 0; q < kQ; ++q) {
      u.of[k].current[q] = current_[k][q].load(std::memory_order_acquire);
      u.of[k].total[q] = total_[k][q].load(std::memory_order_acquire);
    }
  }
  return u;
}

void UsageCounters::add_unpublished(const Local& local, Usage& into) noexcept {
  for (int k = 0; k < kSizeKinds; ++k) {
    for (int q = 0; q < kQ; ++q) {
      const std::uint64_t in = local.kind[k].in[q].load(kRelaxed);
      const std::uint64_t out = local.kind[k].out[q].load(kRelaxed);
      into.of[k].current[q] += static_cast<std::int64_t>(in - out);
      into.of[k].total[q] += in;
    }
  }
}

void UsageCounters::raise(int kind, const Seen& seen) noexcept {
  for (int q = 0; q < kQ; ++q) {
    raise_to(peak_[kind][q], seen[kind][q]);
    raise_to(peak_[kAll][q], seen[0][q] + seen[1][q]);
  }
  raise_to(demand_peak_, seen[0][kBytes] + seen[1][kBytes]);
}

void UsageCounters::raise_and_refresh(Local& local, int kind) noexcept {
  Seen seen;
  for (int j = 0; j < kSizeKinds; ++j) {
    const Local::Kind& l = local.kind[j];
    for (int q = 0; q < kQ; ++q) {
      seen[j][q] = current_[j][q].load(kRelaxed) +
                   static_cast<std::int64_t>(l.in[q].load(kRelaxed) - l.out[q].load(kRelaxed));
    }
  }
  raise(kind, seen);
  refresh(local.view);
}

void UsageCounters::refresh(Local::View& v) const noexcept {
  // The generation first (acquire): a change after it makes the next
  // allocation refresh again.
  v.generation = generation_.load(std::memory_order_acquire);
  std::int64_t current[kSizeKinds + 1][kQ] = {};
  for (int k = 0; k < kSizeKinds; ++k) {
    for (int q = 0; q < kQ; ++q) {
      current[k][q] = current_[k][q].load(kRelaxed);
      current[kAll][q] += current[k][q];
    }
  }
  for (int k = 0; k <= kAll; ++k) {
    for (int q = 0; q < kQ; ++q) v.slack[k][q] = peak_[k][q].load(kRelaxed) - current[k][q];
  }
  v.demand_slack = demand_peak_.load(kRelaxed) - current[kAll][kBytes];
}

UsageCounters::Peaks UsageCounters::peaks() const noexcept {
  Peaks p;
  for (int k = 0; k <= kAll; ++k) {
    for (int q = 0; q < kQ; ++q) p.of[k][q] = std::max<std::int64_t>(0, peak_[k][q].load(kRelaxed));
  }
  return p;
}

void UsageCounters::reset_peaks(const Usage& current) noexcept {
  for (int k = 0; k <= kAll; ++k) {
    for (int q = 0; q < kQ; ++q) peak_[k][q].store(current.of[k].current[q], kRelaxed);
  }
  changed();
}

std::size_t UsageCounters::take_demand_peak(std::int64_t current) noexcept {
  const std::int64_t p = demand_peak_.exchange(current, kRelaxed);
  changed();
  return static_cast<std::size_t>(std::max<std::int64_t>({0, p, current}));
}

}  // namespace vmm::heap
