// Event ring implementation. See event_ring.hpp for the design (a seqlock per
// slot, writers claiming slots with compare-and-swap).
#include "allocator/record/event_ring.hpp"

#include <time.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include "allocator/base/types.hpp"

namespace vmm {

namespace {

constexpr std::size_t kDefaultCapacity = 4096;
// Devices whose mapped totals are kept (vmmalloc's device limit).
constexpr int kMaxDevices = 64;
// A writer that finds its slot still being written by an older event (the
// ring wrapped around during that write) waits this many rounds, then drops
// its own event rather than block.
constexpr int kMaxSpins = 1000;

std::uint64_t now_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

struct ProcessRing {
  std::mutex mutex;  // creation only
  std::size_t capacity = kDefaultCapacity;
  std::atomic<EventRing*> ring{nullptr};
  std::array<std::atomic<std::int64_t>, kMaxDevices> mapped{};
};

ProcessRing& process_ring() {
  static ProcessRing* p = new ProcessRing();  // never destroyed: exit handlers may record
  return *p;
}

std::int64_t add_mapped(int device, std::int64_t delta) noexcept {
  if (device < 0 || device >= kMaxDevices) return 0;
  return process_ring().mapped[static_cast<std::size_t>(device)].fetch_add(
             delta, std::memory_order_relaxed) +
         delta;
}

void record_now(Event e) noexcept {
  try {
    e.time_ns = now_ns();
    events::ring().record(e);
  } catch (...) {
    // Out of host memory creating the ring: the event is lost, nothing else.
  }
}

}  // namespace

const char* event_kind_name(EventKind kind) noexcept {
  switch (kind) {
    case EventKind::allocate:
      return "allocate";
    case EventKind::free:
      return "free";
    case EventKind::map:
      return "map";
    case EventKind::unmap:
      return "unmap";
    case EventKind::grow:
      return "grow";
    case EventKind::shrink:
      return "shrink";
    case EventKind::oom:
      return "oom";
  }
  return "?";
}

EventRing::EventRing(std::size_t capacity)
    : capacity_(std::max<std::size_t>(capacity, 1)), slots_(new Slot[capacity_]) {}

void EventRing::record(const Event& e) noexcept {
  const std::uint64_t n = next_.fetch_add(1, std::memory_order_relaxed);
  Slot& slot = slots_[n % capacity_];
  const std::uint64_t writing = 2 * n + 1;
  std::uint64_t seen = slot.seq.load(std::memory_order_acquire);
  for (int spins = 0;; ++spins) {
    if (seen >= writing) return;  // a newer event has the slot: ours is already history
    if ((seen & 1) != 0) {        // an older event is being written there
      if (spins >= kMaxSpins) return;
      std::this_thread::yield();
      seen = slot.seq.load(std::memory_order_acquire);
      continue;
    }
    // Acquire on success too (the slot is ours then; the release fence below
    // orders our writes): GCC 12 rejects a failure order stronger than the
    // success order (-Winvalid-memory-model), which C++17 allows.
    if (slot.seq.compare_exchange_weak(seen, writing, std::memory_order_acquire)) {
      break;
    }
  }
  std::atomic_thread_fence(std::memory_order_release);
  const std::uint64_t w[kWords] = {
      e.time_ns,
      static_cast<std::uint64_t>(e.kind) |
          (static_cast<std::uint64_t>(static_cast<std::uint32_t>(e.device)) << 8),
      static_cast<std::uint64_t>(e.addr),
      e.bytes,
      e.detail,
      static_cast<std::uint64_t>(e.stream),
      static_cast<std::uint64_t>(e.mapped_after)};
  for (std::size_t i = 0; i < kWords; ++i) slot.words[i].store(w[i], std::memory_order_relaxed);
  slot.seq.store(writing + 1, std::memory_order_release);
}

EventRing::Contents EventRing::read() const {
  Contents out;
  const std::uint64_t end = next_.load(std::memory_order_acquire);
  const std::uint64_t begin = end > capacity_ ? end - capacity_ : 0;
  out.recorded = end;
  out.events.reserve(static_cast<std::size_t>(end - begin));
  for (std::uint64_t n = begin; n < end; ++n) {
    const Slot& slot = slots_[n % capacity_];
    const std::uint64_t complete = 2 * n + 2;
    if (slot.seq.load(std::memory_order_acquire) != complete) continue;
    std::uint64_t w[kWords];
    for (std::size_t i = 0; i < kWords; ++i) w[i] = slot.words[i].load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (slot.seq.load(std::memory_order_relaxed) != complete) continue;
    Event e;
    e.time_ns = w[0];
    e.kind = static_cast<EventKind>(w[1] & 0xff);
    e.device = static_cast<int>(static_cast<std::uint32_t>(w[1] >> 8));
    e.addr = static_cast<std::uintptr_t>(w[2]);
    e.bytes = w[3];
    e.detail = w[4];
    e.stream = static_cast<std::uintptr_t>(w[5]);
    e.mapped_after = static_cast<std::int64_t>(w[6]);
    out.events.push_back(e);
  }
  out.lost = out.recorded - out.events.size();
  return out;
}

namespace events {

std::atomic<bool> g_allocation_events{false};

EventRing& ring() {
  ProcessRing& p = process_ring();
  if (EventRing* r = p.ring.load(std::memory_order_acquire)) return *r;
  std::lock_guard lock(p.mutex);
  if (EventRing* r = p.ring.load(std::memory_order_acquire)) return *r;
  auto* r = new EventRing(p.capacity);  // never destroyed, like the contexts
  p.ring.store(r, std::memory_order_release);
  return *r;
}

bool configure_ring(std::size_t capacity) {
  ProcessRing& p = process_ring();
  std::lock_guard lock(p.mutex);
  if (p.ring.load(std::memory_order_acquire) != nullptr) return false;
  p.capacity = std::max<std::size_t>(capacity, 1);
  return true;
}

void set_allocation_events(bool on) noexcept {
  g_allocation_events.store(on, std::memory_order_relaxed);
}

std::int64_t mapped_bytes(int device) noexcept {
  if (device < 0 || device >= kMaxDevices) return 0;
  return process_ring().mapped[static_cast<std::size_t>(device)].load(std::memory_order_relaxed);
}

void record_allocate(int device, std::uintptr_t addr, std::size_t bytes, std::size_t requested,
                     Stream stream) noexcept {
  Event e;
  e.kind = EventKind::allocate;
  e.device = device;
  e.addr = addr;
  e.bytes = bytes;
  e.detail = requested;
  e.stream = reinterpret_cast<std::uintptr_t>(stream);
  e.mapped_after = mapped_bytes(device);
  record_now(e);
}

void record_free(int device, std::uintptr_t addr, std::size_t bytes, Stream stream) noexcept {
  Event e;
  e.kind = EventKind::free;
  e.device = device;
  e.addr = addr;
  e.bytes = bytes;
  e.stream = reinterpret_cast<std::uintptr_t>(stream);
  e.mapped_after = mapped_bytes(device);
  record_now(e);
}

void record_map(int device, const std::vector<Mapping>& mappings) noexcept {
  if (mappings.empty()) return;
  Event e;
  e.kind = EventKind::map;
  e.device = device;
  e.addr = mappings.front().va;
  for (const Mapping& m : mappings) {
    e.addr = std::min(e.addr, m.va);
    e.bytes += m.chunk.bytes;
  }
  e.detail = mappings.size();
  e.mapped_after = add_mapped(device, static_cast<std::int64_t>(e.bytes));
  record_now(e);
}

void record_unmapped(int device, const std::vector<Mapping>& all,
                     const std::vector<Mapping>& still_mapped) noexcept {
  Event e;
  e.kind = EventKind::unmap;
  e.device = device;
  bool any = false;
  for (const Mapping& m : all) {
    const bool kept = std::any_of(still_mapped.begin(), still_mapped.end(),
                                  [&](const Mapping& s) { return s.va == m.va; });
    if (kept) continue;
    e.addr = any ? std::min(e.addr, m.va) : m.va;
    e.bytes += m.chunk.bytes;
    ++e.detail;
    any = true;
  }
  if (!any) return;
  e.mapped_after = add_mapped(device, -static_cast<std::int64_t>(e.bytes));
  record_now(e);
}

void record_resize(int device, EventKind kind, std::uintptr_t base, std::size_t new_size,
                   std::size_t old_size) noexcept {
  Event e;
  e.kind = kind;
  e.device = device;
  e.addr = base;
  e.bytes = new_size;
  e.detail = old_size;
  e.mapped_after = mapped_bytes(device);
  record_now(e);
}

void record_oom(int device, std::size_t bytes, Stream stream, bool workspace) noexcept {
  Event e;
  e.kind = EventKind::oom;
  e.device = device;
  e.bytes = bytes;
  e.detail = workspace ? 1 : 0;
  e.stream = reinterpret_cast<std::uintptr_t>(stream);
  e.mapped_after = mapped_bytes(device);
  record_now(e);
}

}  // namespace events

}  // namespace vmm
