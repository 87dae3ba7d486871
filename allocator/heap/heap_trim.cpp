// Heap: giving memory back and running short of it.
//
// Trim: empty_cache() unmaps every whole free chunk; trim_to_limit() and
// the reclaimer's periodic background_trim() only those whose users' work
// is done, down to the pool's cache limit (the background trim also keeps
// what the recent peak demand may want again, and acts only after free
// memory stayed above that for kTrimDelay). Memory pressure: before
// mapping, an allocation may wait for fenced free memory (other streams'
// frees whose work is pending) above fenced_free_limit; after a failed
// growth, reclaim_for_oom_locked waits for every other stream's free
// memory and the reclaimer, and the final OutOfMemoryError says what the
// heap holds. Everything *_locked runs with the heap mutex held;
// recent_demand takes demand_mutex_ (a leaf lock).
#include <algorithm>
#include <chrono>
#include <limits>
#include <string>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "allocator/heap/heap.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

Heap::FencedFree Heap::fenced_free_locked(PoolId pool) {
  FencedFree out;
  for (FreeIndex& idx : pools_[pool].index) {
    idx.for_each_stream_list([&](Stream, const heap::SizeSet& set) {
      for (Block* b : set) {
        if (b->neutral) continue;
        // Not even its own stream may take it before these complete.
        bool waits = false;
        for (Stream x : b->extra) waits = waits || b->epoch >= use_.frontier(x);
        if (!waits) continue;
        out.bytes += b->size;
        if (out.oldest == nullptr || b->epoch < out.oldest->epoch) out.oldest = b;
        if (out.newest == nullptr || b->epoch > out.newest->epoch) out.newest = b;
      }
    });
  }
  return out;
}

Heap::Block* Heap::wait_for_fenced_free_locked(std::unique_lock<std::mutex>& lock, PoolId pool,
                                               SizeKind kind, Stream stream, std::size_t rounded,
                                               std::uint64_t entry_epoch) {
  const std::size_t limit = context_.config().fenced_free_limit;
  for (;;) {
    const FencedFree f = fenced_free_locked(pool);
    if (f.bytes == 0) return nullptr;
    // Only a fence recorded before this call is waited for: one recorded now
    // would wait for everything queued so far, leaving the GPU idle until
    // the program queues more. Then this allocation maps, and a later one
    // waits.
    bool recorded_before =
        f.oldest->stream == stream || use_.covered(f.oldest->stream, f.oldest->epoch, entry_epoch);
    for (Stream x : f.oldest->extra) {
      recorded_before = recorded_before && use_.covered(x, f.oldest->epoch, entry_epoch);
    }
    // Fences after the newest such free now, so that a later wait finds one
    // recorded at about the time of the free it waits for, with the GPU work
    // queued since still ahead of it.
    request_fences_locked(f.newest, stream);
    if (limit == 0 || f.bytes <= limit || !recorded_before) return nullptr;
    // Every other user of the oldest block (`stream` too, if it is one: then
    // no stream may take it), and its own stream unless that is `stream`.
    std::vector<Fence> fences;
    auto add = [&](Stream s) {
      std::optional<Fence> fence = use_.fence_for(s, f.oldest->epoch);
      if (!fence) return false;  // capturing: no fence to wait for
      fences.push_back(std::move(*fence));
      return true;
    };
    bool fenced = f.oldest->stream == stream || add(f.oldest->stream);
    for (Stream x : f.oldest->extra) fenced = fenced && add(x);
    if (!fenced) return nullptr;  // map new memory instead
    ++fenced_free_waits_;
    lock.unlock();  // other threads allocate and free meanwhile
    bool waited = true;
    try {
      for (const Fence& fence : fences) fence.wait();
    } catch (const Error& e) {
      log(LogLevel::warn,
          "heap: waiting for the work on freed memory failed (mapping new memory "
          "instead): %s",
          e.what());
      waited = false;
    }
    lock.lock();
    if (!waited) return nullptr;
    use_.forget();  // the fences waited for (and others) may have completed
    refresh_locked();
    if (Block* b = find_fit_locked(pool, kind, stream, rounded)) return b;
  }
}

std::size_t Heap::release_free_chunks_locked(bool complete_only, std::size_t budget) {
  const std::vector<FreeChunk> chunks = free_chunks_locked(0, nullptr, false);
  std::map<Block*, std::vector<std::uintptr_t>> by_block;
  for (const FreeChunk& fc : chunks) {
    by_block[fc.block].push_back(fc.block->segment->chunks[fc.index].va);
  }
  std::size_t released = 0;
  for (auto& [b, idx] : by_block) {
    if (released >= budget) break;
    if (complete_only && !b->neutral) {
      bool all = true;
      std::vector<Stream> users = b->extra;
      users.push_back(b->stream);
      for (Stream s : users) all = use_.request(s, b->epoch) && all;
      if (!all) continue;
    }
    std::vector<Fence> fences;
    if (!unmap_fences_locked(b, fences)) continue;
    std::sort(idx.begin(), idx.end());
    Segment* seg = b->segment;
    std::vector<Mapping> maps = carve_locked(b, idx);
    for (const Mapping& m : maps) {
      released += m.chunk.bytes;
      mapped_bytes_ -= m.chunk.bytes;
    }
    retire_locked(seg, std::move(fences), std::move(maps));
  }
  return released;
}

std::size_t Heap::empty_cache() {
  std::size_t released = 0;
  {
    std::lock_guard lock(mutex_);
    StreamUse::Round round(use_);  // one completion query per stream
    flush_cache_locked();
    refresh_locked();
    released = release_free_chunks_locked(false, std::numeric_limits<std::size_t>::max());
    unmap_finished_aliases_locked();
  }
  return released + context_.pool().trim(0);
}

std::size_t Heap::free_held_locked() const {
  const auto allocated = allocated_now();
  const std::size_t free_mapped = mapped_bytes_ > allocated ? mapped_bytes_ - allocated : 0;
  return free_mapped + context_.pool().stats().cached_bytes;
}

std::size_t Heap::recent_demand() {
  // The peak since the last tick goes into the current slice; a new slice
  // starts every kDemandBucketTicks ticks.
  constexpr auto kDemandBucketTicks =
      static_cast<std::uint32_t>(heap::kDemandWindow / heap::kTrimInterval / heap::kDemandBuckets);
  const std::uint32_t tick = caches_.advance_clock();
  const std::size_t peak = usage_.take_demand_peak(static_cast<std::int64_t>(allocated_now()));
  std::lock_guard lock(demand_mutex_);
  if (tick % kDemandBucketTicks == 0) {
    demand_slot_ = (demand_slot_ + 1) % heap::kDemandBuckets;
    demand_buckets_[demand_slot_] = 0;
  }
  demand_buckets_[demand_slot_] = std::max(demand_buckets_[demand_slot_], peak);
  return *std::max_element(demand_buckets_.begin(), demand_buckets_.end());
}

std::size_t Heap::background_trim() {
  const std::size_t demand = recent_demand();
  std::lock_guard lock(mutex_);
  StreamUse::Round round(use_);  // one completion query per stream
  // Held (mapped + cached) beyond the recent peak demand plus the cache
  // limit goes: the free memory above the limit that the peak would not use.
  auto excess = [&] {
    const auto allocated = allocated_now();
    const std::size_t held = mapped_bytes_ + context_.pool().stats().cached_bytes;
    const std::size_t keep = context_.pool().cache_limit() + std::max(demand, allocated);
    return held > keep ? held - keep : 0;
  };
  if (excess() == 0) {
    over_limit_since_.reset();
    return 0;
  }
  const auto now = std::chrono::steady_clock::now();
  if (!over_limit_since_) over_limit_since_ = now;
  if (now - *over_limit_since_ < heap::kTrimDelay) return 0;
  // Only idle memory goes: thread-cache lists left unused for kTrimDelay
  // join the free index; lists in steady reuse stay cached (and mapped).
  flush_idle_caches_locked(heap::kIdleTicks);
  const std::size_t budget = excess();
  if (budget == 0) return 0;
  refresh_locked();
  return release_free_chunks_locked(true, budget);
}

std::size_t Heap::trim_to_limit() {
  std::lock_guard lock(mutex_);
  StreamUse::Round round(use_);  // one completion query per stream
  flush_cache_locked();
  const std::size_t held = free_held_locked();
  const std::size_t limit = context_.pool().cache_limit();
  if (held <= limit) return 0;
  refresh_locked();
  return release_free_chunks_locked(true, held - limit);
}

void Heap::reclaim_for_oom_locked(Stream stream) {
  flush_cache_locked();  // every thread's cached blocks
  // The newest free of each other stream with free memory: one wait each.
  std::vector<std::pair<Stream, std::uint64_t>> newest;
  auto note = [&](Stream s, std::uint64_t e) {
    if (s == stream) return;
    for (auto& [ns, ne] : newest) {
      if (ns == s) {
        ne = std::max(ne, e);
        return;
      }
    }
    newest.emplace_back(s, e);
  };
  for (auto& [pid, ps] : pools_) {
    if (pid != 0) continue;
    for (FreeIndex& idx : ps.index) {
      idx.for_each_block([&](const Block* b) {
        if (b->neutral) return;
        note(b->stream, b->epoch);
        for (Stream x : b->extra) note(x, b->epoch);
      });
    }
  }
  for (const auto& [s, e] : newest) use_.wait(s, e);
  try {
    context_.reclaimer().drain();
  } catch (const Error& e) {
    log(LogLevel::warn, "heap: draining the reclaimer under memory pressure failed: %s", e.what());
  }
  use_.forget();  // time passed: ask the driver afresh
  refresh_locked();
}

std::size_t Heap::largest_fit_locked(PoolId pool, const Reclaimer::Accounting& a,
                                     const DeviceMemoryInfo& info) {
  // The largest free block, or whole free chunks plus the pool's cache plus
  // what may still be created.
  std::size_t largest_block = 0;
  for (int k = 0; k < kSizeKinds; ++k) {
    largest_block = std::max(largest_block, index_locked(pool, static_cast<SizeKind>(k)).largest());
  }
  std::size_t whole_chunks = 0;
  for (const FreeChunk& fc : free_chunks_locked(pool, nullptr, false)) whole_chunks += fc.bytes;
  std::size_t headroom = info.free_bytes;
  const std::size_t cap = a.pool.memory_cap_bytes;
  if (cap != 0) {
    headroom = std::min(headroom, cap > a.pool.created_bytes ? cap - a.pool.created_bytes : 0);
  }
  headroom = align_down(headroom, granularity_);
  return std::max(largest_block, whole_chunks + a.pool.cached_bytes + headroom);
}

std::string Heap::oom_message_locked(std::size_t bytes, std::size_t rounded, PoolId pool,
                                     const std::string& cause) {
  const Reclaimer::Accounting a = context_.reclaimer().accounting();
  DeviceMemoryInfo info;
  try {
    info = backend_.memory_info();
  } catch (const Error&) {
  }
  const auto allocated = allocated_now();
  const std::size_t free_mapped = mapped_bytes_ > allocated ? mapped_bytes_ - allocated : 0;
  const std::size_t cached = free_mapped + a.pool.cached_bytes;
  const std::size_t pending = a.reclaimer.pending_bytes;
  const std::size_t held = mapped_bytes_ + a.pool.cached_bytes + pending;
  const std::size_t cap = a.pool.memory_cap_bytes;
  const std::size_t largest = largest_fit_locked(pool, a, info);

  // PyTorch's sentences first (code matches "CUDA out of memory."), then
  // vmmalloc's own account.
  const std::string dev = std::to_string(context_.device());
  const std::size_t reserved = mapped_bytes_ + a.pool.cached_bytes;
  std::string msg = "CUDA out of memory. Tried to allocate " + format_size_like_pytorch(rounded) +
                    ". GPU " + dev + " has a total capacity of " +
                    format_size_like_pytorch(info.total_bytes) + " of which " +
                    format_size_like_pytorch(info.free_bytes) + " is free. ";
  if (cap != 0) msg += format_size_like_pytorch(cap) + " allowed; ";
  msg += "Of the allocated memory " + format_size_like_pytorch(allocated) +
         " is allocated by vmmalloc, and " +
         format_size_like_pytorch(reserved > allocated ? reserved - allocated : 0) +
         " is reserved by vmmalloc but unallocated. vmmalloc on device " + dev + ": " +
         format_bytes(bytes) + " requested (" + format_bytes(rounded) + " rounded)";
  if (cap != 0) msg += ", memory cap " + format_bytes(cap);
  msg += "; it holds " + format_bytes(held) + ": " + format_bytes(allocated) + " in use, " +
         format_bytes(cached) + " cached, " + format_bytes(pending) +
         " pending reclaim. The largest request that would fit is " + format_bytes(largest) +
         ". (" + cause + ")";
  return msg;
}

}  // namespace vmm
