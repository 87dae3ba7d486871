// Reclaimer: deferred unmaps. Memory that queued GPU work may still touch is
// handed over with the fences of that work; once every fence of an entry has
// completed, the reclaimer unmaps the entry's mappings, returns their chunks
// to the pool and frees its address range (if any). Nothing here waits for
// any other work: a background thread polls fences (it runs in relaxed
// stream-capture mode, so it never breaks a user's CUDA-graph capture), and
// only drain() - used under memory pressure and at shutdown - blocks, on the
// fences of the pending entries alone.
//
// Thread-safety: one mutex guards the entry list and the counters; unmapping
// and pool/address-space calls run outside it. An entry being processed is
// marked so cancel() can wait for it to finish instead of racing it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "allocator/backend/backend.hpp"
#include "allocator/vm/address_space.hpp"
#include "allocator/vm/fence.hpp"
#include "allocator/vm/physical_pool.hpp"

namespace vmm {

struct ReclaimView;

struct ReclaimerStats {
  std::size_t pending_bytes = 0;  // mapped bytes waiting for their fences
  std::size_t pending_entries = 0;
  std::uint64_t reclaimed_entries = 0;
  std::uint64_t reclaimed_bytes = 0;
  std::uint64_t cancelled_entries = 0;
  std::uint64_t failures = 0;  // reclaims retried because an unmap failed
};

class Reclaimer {
 public:
  using Ticket = std::uint64_t;

  // A pending entry taken back by cancel(): its mappings are still mapped,
  // with access granted, and its fences still guard them.
  struct Cancelled {
    std::vector<Fence> fences;
    std::vector<Mapping> mappings;
  };

  // Starts the background thread unless `background_thread` is false (then
  // only poll() and drain() reclaim; used by deterministic tests).
  Reclaimer(Backend& backend, PhysicalPool& pool, AddressSpace& space,
            bool background_thread = true);
  // Stops the thread, then drains (waits on every pending fence).
  ~Reclaimer();
  // Stops and joins the background thread; pending entries stay pending
  // (poll() and drain() still work). Used at process exit, before the CUDA
  // driver tears itself down, so the thread never queries a dead driver.
  void stop_background_thread();
  Reclaimer(const Reclaimer&) = delete;
  Reclaimer& operator=(const Reclaimer&) = delete;

  // Queues an entry: once all `fences` complete, unmap `mappings`, give their
  // chunks to the pool, then return `range` (if not empty) to the address
  // space. Never waits, never throws except std::bad_alloc.
  Ticket submit(std::vector<Fence> fences, std::vector<Mapping> mappings, VaRange range = {});

  // Takes a pending entry back before it is reclaimed. Returns nullopt if it
  // was already reclaimed (its address range is then unmapped); if it is
  // being reclaimed right now, waits for that to finish first.
  std::optional<Cancelled> cancel(Ticket ticket);

  // Reclaims every entry whose fences have completed; never waits on a fence.
  // Returns the number of entries reclaimed.
  std::size_t poll();
  // Waits on the fences of every pending entry and reclaims them; returns
  // the number reclaimed. Used under memory pressure and at shutdown. An
  // entry whose fence wait fails stays pending, unless `force` (shutdown:
  // the driver is going away and unmapping is the only way forward).
  std::size_t drain(bool force = false);

  ReclaimerStats stats() const;
  // The pending entries with their fences, for snapshots
  // (reclaimer.cpp). Never queries a fence.
  std::vector<ReclaimView> describe() const;

  // Periodic work for the background thread (the heap's trim of cached
  // memory above its limit): `task` runs on that thread (relaxed capture
  // mode) about every `interval`, outside the reclaimer's lock. Returns an id
  // for remove_background_task, which waits for a running call to finish.
  // Without a background thread the task never runs.
  using TaskId = std::uint64_t;
  TaskId add_background_task(std::function<void()> task, std::chrono::milliseconds interval);
  void remove_background_task(TaskId id);

  // The pool's and the reclaimer's counters read at one instant: chunks move
  // from "pending" to "cached" under the reclaimer's lock, so in a quiet
  // moment pool.acquired_bytes == bytes mapped by regions + pending_bytes.
  struct Accounting {
    PoolStats pool;
    ReclaimerStats reclaimer;
  };
  Accounting accounting() const;

 private:
  struct Entry {
    Ticket ticket = 0;
    std::vector<Fence> fences;
    std::vector<Mapping> mappings;
    VaRange range;
    std::size_t bytes = 0;
    bool in_progress = false;
  };
  // Claims ready entries (all fences done, or all when `wait`), marking them
  // in progress. Lock NOT held on entry.
  std::vector<Entry*> claim(bool wait);
  // Unmaps the entry's mappings and gives their chunks to the pool; returns
  // false if some unmap failed (those stay in the entry). Lock NOT held.
  bool reclaim(Entry& entry);
  // Clears the in-progress marks; removes complete entries (freeing their
  // address ranges) and wakes cancel()/drain() waiters. Lock NOT held.
  void finish(const std::vector<Entry*>& claimed, const std::vector<bool>& complete);
  void run();

  Backend& backend_;
  PhysicalPool& pool_;
  AddressSpace& space_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;      // new entry or stop
  std::condition_variable finished_;  // an in-progress entry finished
  std::list<Entry> entries_;
  Ticket next_ticket_ = 1;
  bool stopping_ = false;
  ReclaimerStats stats_;

  struct Task {
    TaskId id;
    std::function<void()> fn;
    std::chrono::milliseconds interval;
    std::chrono::steady_clock::time_point next;
  };
  void run_due_tasks();
  std::mutex tasks_mutex_;  // guards tasks_; held while tasks run (before mutex_)
  std::vector<Task> tasks_;
  TaskId next_task_ = 1;
  std::atomic<bool> has_tasks_{false};

  std::thread thread_;
};

}  // namespace vmm
