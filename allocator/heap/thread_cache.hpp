// Thread caches: the heap's hot path (see heap.hpp).
//
// ThreadCache: one thread's cache for one heap, the plain blocks it freed in
// LIFOs by (stream, size), in an open-addressing table. ThreadCaches: one
// heap's set of them, the way a thread finds its own (thread-locals, never
// a lock on a hit), and the trim clock their lists' last use is measured
// in. When a thread exits, its caches go back to the heaps that still
// exist (LiveHeaps, in thread_cache.cpp), which fold their blocks in.
//
// Locks, outermost first: LiveHeaps' (thread exit; the heap takes its own
// mutex inside it) -> ThreadCaches::mutex_ (the list of caches and the
// hits of caches handed back) -> one ThreadCache::lock (its table and
// counters). The owner thread takes only its cache's lock for a push or a
// pop; other threads take it to steal a block or to drain the cache.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "allocator/base/spin_lock.hpp"
#include "allocator/heap/block.hpp"
#include "allocator/heap/usage_counters.hpp"

namespace vmm::heap {

struct alignas(64) ThreadCache {
  struct List {
    Stream stream = nullptr;
    std::size_t size = 0;        // 0: an empty slot
    std::uint32_t last_use = 0;  // the trim clock's tick of the last push or pop
    std::vector<Block*> blocks;
  };
  // A table starts with this many slots (a power of two).
  static constexpr std::size_t kSlots = 16;

  SpinLock lock;
  std::vector<List> table;  // power-of-two size, linear probing
  std::size_t slots_used = 0;
  std::size_t blocks = 0;
  std::uint64_t hits = 0;  // allocations served (for the allocation count)
  // This thread's unpublished usage counts (the heap's UsageCounters):
  // written by the owner only, without `lock`.
  UsageCounters::Local usage;
  bool detached = false;  // handed back: its thread exited or its heap is gone

  // Everything below: `lock` held.
  List* find(Stream stream, std::size_t size) noexcept;
  List& find_or_add(Stream stream, std::size_t size) {
    if (List* l = find(stream, size)) return *l;
    return add(stream, size);
  }
  // Moves every block out (those of lists last used before `idle_before`
  // only, if given: a tick of the trim clock) and empties the table of
  // unused slots.
  void drain(std::vector<Block*>& out, std::optional<std::uint32_t> idle_before = {});

  static std::size_t hash(Stream stream, std::size_t size) noexcept {
    const auto x = (static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(stream)) >> 4) ^
                   (static_cast<std::uint64_t>(size) >> 9) * 0x9E3779B97F4A7C15ull;
    return static_cast<std::size_t>(x ^ (x >> 29));
  }

 private:
  // A new list (not in the table); grows the table to stay at most half full.
  List& add(Stream stream, std::size_t size);
};

class ThreadCaches {
 public:
  // Called when a thread that used the heap exits, with its cache (LiveHeaps'
  // lock held): the heap takes the blocks back (see detach()).
  using OnThreadExit = std::function<void(ThreadCache&)>;
  explicit ThreadCaches(OnThreadExit on_thread_exit);
  ThreadCaches(const ThreadCaches&) = delete;
  ThreadCaches& operator=(const ThreadCaches&) = delete;

  // Enters (withdraws from) the live heaps: a thread that exits hands its
  // cache back only while these caches are listed there.
  void publish();
  void withdraw();

  // The calling thread's cache (made on first use), or nullptr while the
  // thread is exiting. Thread-locals only, once made.
  ThreadCache* mine();
  // The block of `size` for `stream` `tc` cached last, or nullptr.
  Block* pop(ThreadCache& tc, Stream stream, std::size_t size);
  // A block from another thread's cache (one that thread freed), or nullptr.
  Block* steal(ThreadCache& tc, Stream stream, std::size_t size);
  // False if the cache was handed back (the block must take the slow path).
  bool push(ThreadCache& tc, Block* b);

  // Move cached blocks into `out` (the heap mutex held by the caller):
  // every cache's (and, with `detach`, hand every cache back for good);
  // `tc`'s; the lists unused for `idle_ticks` ticks of every cache; or an
  // exited thread's cache, which is handed back.
  void drain_all(std::vector<Block*>& out, bool detach);
  void drain_one(ThreadCache& tc, std::vector<Block*>& out);
  void drain_idle(std::vector<Block*>& out, std::uint32_t idle_ticks);
  void detach(ThreadCache& tc, std::vector<Block*>& out);

  // Allocations served from caches (handed back ones included).
  std::uint64_t hits() const;
  // Adds the listed caches' unpublished usage counts to `into`.
  void add_unpublished_usage(UsageCounters::Usage& into) const;
  // The trim clock: one tick per background trim. Returns the new tick.
  std::uint32_t advance_clock() noexcept {
    return clock_.fetch_add(1, std::memory_order_relaxed) + 1;
  }

 private:
  // Caches are found by this id, never by address (a new heap may reuse
  // a gone one's).
  const std::uint64_t id_;
  const OnThreadExit on_thread_exit_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<ThreadCache>> caches_;  // every thread's that used the heap
  std::uint64_t detached_hits_ = 0;                   // hits counted by caches handed back
  std::atomic<std::uint32_t> clock_{0};

  friend struct ExitingThread;
};

inline ThreadCache::List* ThreadCache::find(Stream stream, std::size_t size) noexcept {
  if (table.empty()) return nullptr;
  const std::size_t mask = table.size() - 1;
  for (std::size_t i = hash(stream, size) & mask;; i = (i + 1) & mask) {
    List& l = table[i];
    if (l.size == 0) return nullptr;
    if (l.size == size && l.stream == stream) return &l;
  }
}

inline Block* ThreadCaches::pop(ThreadCache& tc, Stream stream, std::size_t size) {
  std::lock_guard lock(tc.lock);
  ThreadCache::List* l = tc.find(stream, size);
  if (l == nullptr || l->blocks.empty()) return nullptr;
  Block* b = l->blocks.back();
  l->blocks.pop_back();
  l->last_use = clock_.load(std::memory_order_relaxed);
  --tc.blocks;
  ++tc.hits;
  return b;
}

inline bool ThreadCaches::push(ThreadCache& tc, Block* b) {
  std::lock_guard lock(tc.lock);
  if (tc.detached) return false;
  ThreadCache::List& l = tc.find_or_add(b->stream, b->size);
  l.blocks.push_back(b);
  l.last_use = clock_.load(std::memory_order_relaxed);
  ++tc.blocks;
  return true;
}

}  // namespace vmm::heap
