// Event ring: a bounded record of the allocator's recent events, for
// snapshots (allocator/observe/snapshot.hpp) and `vmmctl`.
//
// Kinds: allocate and free (per allocation: recorded only while allocation
// events are on - VMMALLOC_CONF allocation_events:on, or
// set_allocation_events()), and map, unmap, grow, shrink and oom (always
// recorded: they happen on slow paths only).
//
// One process-wide ring of fixed capacity (event_ring_size, taken from the
// process configuration when vmmalloc starts; 4096 until then). When full,
// the oldest events are overwritten. Recording is lock-free: a writer claims
// the next sequence number with one atomic add and fills that slot under a
// per-slot sequence word (a seqlock); a reader copies the slots and keeps
// those whose sequence word says they were complete and not overwritten
// while copied. A writer never overwrites a slot a newer writer has taken, so
// a copy is never a mix of two events.
//
// Besides the events, the ring keeps a running total per device of the
// virtual memory mapped (map minus unmap bytes, every mapping counted,
// aliases included); each event carries the total of its device after it,
// which is what `vmmctl html` plots over time.
//
// Cost with allocation events off: one relaxed atomic load per allocation
// and per free (allocation_events_on()), nothing else.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "allocator/base/types.hpp"

namespace vmm {

enum class EventKind : std::uint8_t { allocate, free, map, unmap, grow, shrink, oom };
inline constexpr int kEventKinds = 7;

// "allocate", "free", "map", "unmap", "grow", "shrink", "oom".
const char* event_kind_name(EventKind kind) noexcept;

// One event. `detail` depends on the kind:
//   allocate  bytes: rounded block size   detail: requested bytes
//   free      bytes: block size           detail: 0
//   map       bytes: bytes mapped         detail: chunks mapped    (addr: first chunk)
//   unmap     bytes: bytes unmapped       detail: chunks unmapped  (addr: first chunk)
//   grow      bytes: new size             detail: previous size    (addr: workspace base)
//   shrink    bytes: new size             detail: previous size    (addr: workspace base)
//   oom       bytes: bytes requested      detail: 1 for a workspace grow, 0 for an allocation
struct Event {
  std::uint64_t time_ns = 0;  // CLOCK_REALTIME, nanoseconds since the Unix epoch
  EventKind kind = EventKind::allocate;
  int device = 0;
  std::uintptr_t addr = 0;
  std::uint64_t bytes = 0;
  std::uint64_t detail = 0;
  std::uintptr_t stream = 0;      // allocate, free, oom; 0 otherwise
  std::int64_t mapped_after = 0;  // the device's mapped total after this event
};

class EventRing {
 public:
  // Holds the `capacity` most recent events (at least 1).
  explicit EventRing(std::size_t capacity);
  EventRing(const EventRing&) = delete;
  EventRing& operator=(const EventRing&) = delete;

  // Never blocks, never allocates, never throws.
  void record(const Event& event) noexcept;

  struct Contents {
    std::vector<Event> events;   // oldest first
    std::uint64_t recorded = 0;  // events recorded since the ring was made
    std::uint64_t lost = 0;      // of those, overwritten (or being written) and not returned
  };
  // A copy of the events held now. Safe against concurrent writers.
  Contents read() const;
  std::size_t capacity() const noexcept { return capacity_; }

 private:
  static constexpr std::size_t kWords = 7;
  struct Slot {
    // 2*n + 1 while event n is written, 2*n + 2 once complete; 0: never used.
    std::atomic<std::uint64_t> seq{0};
    std::array<std::atomic<std::uint64_t>, kWords> words{};
  };
  std::size_t capacity_;
  std::unique_ptr<Slot[]> slots_;
  alignas(64) std::atomic<std::uint64_t> next_{0};
};

namespace events {

// The process-wide ring; created on first use with the capacity given to
// configure_ring() before that (4096 if none was).
EventRing& ring();
// Sets the capacity of the process-wide ring if it does not exist yet;
// returns false (and changes nothing) once it does.
bool configure_ring(std::size_t capacity);

// Whether allocate/free events are recorded. One relaxed atomic load: the
// allocation hot path's only cost while off.
extern std::atomic<bool> g_allocation_events;
inline bool allocation_events_on() noexcept {
  return g_allocation_events.load(std::memory_order_relaxed);
}
void set_allocation_events(bool on) noexcept;

// The device's running mapped total (map minus unmap bytes recorded so far).
std::int64_t mapped_bytes(int device) noexcept;

// Recorders. All are noexcept and cheap (a clock read and a ring write).
void record_allocate(int device, std::uintptr_t addr, std::size_t bytes, std::size_t requested,
                     Stream stream) noexcept;
void record_free(int device, std::uintptr_t addr, std::size_t bytes, Stream stream) noexcept;
// One map event for `mappings` (nothing if empty): bytes and chunks summed,
// addr the lowest address.
void record_map(int device, const std::vector<Mapping>& mappings) noexcept;
// One unmap event for the mappings of `all` that are not in `still_mapped`
// (matched by address; nothing if none).
void record_unmapped(int device, const std::vector<Mapping>& all,
                     const std::vector<Mapping>& still_mapped) noexcept;
void record_resize(int device, EventKind kind, std::uintptr_t base, std::size_t new_size,
                   std::size_t old_size) noexcept;
void record_oom(int device, std::size_t bytes, Stream stream, bool workspace) noexcept;

}  // namespace events

}  // namespace vmm
