// The heap's data: blocks and segments (see heap.hpp for how they are used).
//
// A Segment is a reserved VA range with physical chunks mapped behind part
// of it; Blocks tile its mapped parts in address order. Two kinds of
// Block are placeholders rather than memory (dead and vacant ranges of a
// segment whose chunks were stitched away); they are linked with the
// blocks but are in neither the pointer map nor the free index.
//
// Guards: a live block's fields are guarded by its pointer shard (`state`
// and `requested` are atomics: the thread that pops a cached block sets
// them before handing it out); a cached block belongs to its thread cache;
// a free block, a placeholder and every segment to the heap mutex.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <set>
#include <vector>

#include "allocator/base/types.hpp"
#include "allocator/heap/size_classes.hpp"
#include "allocator/vm/reclaimer.hpp"
#include "vmmalloc/stats.hpp"

namespace vmm::heap {

struct Segment;

// A relaxed atomic that copies (blocks are copied when split).
template <class T>
struct Relaxed {
  std::atomic<T> v{};
  Relaxed() = default;
  Relaxed(const Relaxed& o) : v(o.get()) {}
  Relaxed& operator=(const Relaxed& o) {
    set(o.get());
    return *this;
  }
  T get() const noexcept { return v.load(std::memory_order_relaxed); }
  void set(T x) noexcept { v.store(x, std::memory_order_relaxed); }
};

// Cache-line aligned: threads write the blocks they allocate and free
// (state, requested, epoch); blocks of different threads sharing a line
// made 8-thread pairs of 512 B ~3x slower on the host backend.
struct alignas(64) Block {
  std::uintptr_t addr = 0;
  std::size_t size = 0;
  Relaxed<std::size_t> requested;  // of a live block
  Segment* segment = nullptr;
  Block* prev = nullptr;      // address order within the segment (may be
  Block* next = nullptr;      // non-adjacent across unmapped holes)
  Stream stream = nullptr;    // owner: allocated on / freed in its order
  std::vector<Stream> extra;  // other users (record_stream, cross-stream free)
  std::uint64_t epoch = 0;    // StreamUse epoch of the free
  PoolId pool = 0;
  // dead and vacant: placeholders for address ranges of a segment whose
  // chunks were stitched away. dead: the old mapping (an alias) is still
  // there until its users' fences complete (Heap::PendingAliases); vacant:
  // unmapped, to be mapped again when a request fits the free blocks
  // around it plus the range.
  enum class State : std::uint8_t { live, cached, free, dead, vacant };
  // Atomic because the heap mutex's holder reads a neighbour's state (to
  // coalesce) while a hot-path free may be turning it live -> cached,
  // and a pointer shard's readers while a cache hit turns it cached ->
  // live; live/cached both mean "not free", which is all the first
  // needs, and a block popped from a cache is not yet anyone's pointer.
  Relaxed<State> state;
  bool neutral = false;  // free, every user's work done: usable by any stream
  std::uintptr_t end() const noexcept { return addr + size; }
};

struct Segment {
  VaRange range;                // reserved; mapped below `frontier` only
  std::uintptr_t frontier = 0;  // where the next growth is mapped
  SizeKind kind = SizeKind::large;
  PoolId pool = 0;
  std::vector<Mapping> chunks;             // mapped, sorted by va
  std::vector<Reclaimer::Ticket> tickets;  // unmaps of chunks detached from it
  Block* last = nullptr;                   // its highest block
  // Its pool is asleep: `chunks` say where memory goes back on wake; their
  // handles were released.
  bool asleep = false;
};

// Free blocks in size order (then address order: best fit is deterministic).
struct BySize {
  bool operator()(const Block* a, const Block* b) const noexcept {
    return a->size != b->size ? a->size < b->size : a->addr < b->addr;
  }
};
using SizeSet = std::set<Block*, BySize>;

}  // namespace vmm::heap
