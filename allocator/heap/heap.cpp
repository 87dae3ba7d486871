// Heap: construction and teardown, the public entry points with the hot
// path (thread caches, pointer shards), and the free blocks: the free
// index, coalescing, best fit and handing a block out. See heap.hpp for
// the structure and the lock order; growth, carving, trim and graph pools
// are in heap_growth.cpp, heap_carve.cpp, heap_trim.cpp and heap_pools.cpp.
//
// The hot path (allocate/deallocate on a cache hit) takes a pointer shard's
// lock and the thread's cache lock, never mutex_; everything named
// *_locked runs with mutex_ held.
#include "allocator/heap/heap.hpp"

#include <algorithm>
#include <string>

#include "allocator/base/log.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

Heap::Heap(DeviceContext& context)
    : context_(context),
      backend_(context.backend()),
      granularity_(context.backend().granularity()),
      use_(context.backend()),
      caches_([this](ThreadCache& tc) { adopt_cache(tc); }) {
  pools_[0];
  try {
    device_total_ = backend_.memory_info().total_bytes;
  } catch (const Error& e) {
    log(LogLevel::warn, "heap: reading device memory failed: %s", e.what());
  }
  trim_task_ =
      context_.reclaimer().add_background_task([this] { background_trim(); }, heap::kTrimInterval);
  // Last, so a heap among the live ones is always destroyed (and leaves).
  try {
    caches_.publish();
  } catch (...) {
    context_.reclaimer().remove_background_task(trim_task_);
    throw;
  }
}

Heap::~Heap() {
  context_.reclaimer().remove_background_task(trim_task_);
  caches_.withdraw();  // from now on no exiting thread hands a cache back here
  try {
    std::lock_guard lock(mutex_);
    flush_cache_locked(/*detach=*/true);  // no thread uses a cache of this heap again
    drop_sleep_state_locked();            // sleeping segments have nothing mapped
    for (auto& [pid, ps] : pools_) ps.growing.fill(nullptr);  // every segment goes
    // Every block, live or free, is released in its users' stream order;
    // aliases of dead placeholders after their own fences.
    std::unordered_map<Segment*, std::vector<Fence>> fences;
    std::unordered_map<Segment*, std::vector<Mapping>> aliases;
    for (Segment* seg : segments_) drop_placeholders_locked(seg, fences[seg], aliases[seg]);
    std::vector<Block*> blocks;
    for (PtrShard& sh : ptrs_) {
      std::lock_guard shard_lock(sh.mutex);
      for (auto& [addr, b] : sh.blocks) blocks.push_back(b);
      sh.blocks.clear();
    }
    for (Block* b : blocks) {
      const bool live = b->state.get() == Block::State::live;
      if (live || !b->neutral) {
        const std::uint64_t epoch = live ? use_.now() : b->epoch;
        std::vector<Stream> users = b->extra;
        users.push_back(b->stream);
        for (Stream s : users) {
          std::optional<Fence> f = use_.fence_for(s, epoch);
          if (!f) {
            log(LogLevel::debug,
                "heap teardown: no fence on a stream (capturing or "
                "destroyed); unmapping without waiting for it");
          } else if (*f) {
            fences[b->segment].push_back(*f);
          }
        }
      }
      delete b;
    }
    for (Segment* seg : std::vector<Segment*>(segments_.begin(), segments_.end())) {
      std::vector<Mapping> mappings = std::move(seg->chunks);
      seg->chunks.clear();
      mappings.insert(mappings.end(), aliases[seg].begin(), aliases[seg].end());
      retire_locked(seg, std::move(fences[seg]), std::move(mappings));
    }
    mapped_bytes_ = 0;
  } catch (const std::exception& e) {
    log(LogLevel::error, "heap teardown failed: %s", e.what());
  }
}

// ---------------------------------------------------------------- shards

Heap::PtrShard& Heap::ptr_shard(std::uintptr_t addr) const {
  const std::uint64_t h = (static_cast<std::uint64_t>(addr) >> 9) * 0x9E3779B97F4A7C15ull;
  return ptrs_[h >> 58];
}

void Heap::adopt_cache(ThreadCache& tc) {
  usage_.publish(tc.usage);  // its thread is gone: nobody writes the deltas again
  std::lock_guard lock(mutex_);
  std::vector<Block*> blocks;
  caches_.detach(tc, blocks);
  fold_cached_locked(blocks);
}

heap::UsageCounters::Local* Heap::usage_local() {
  heap::ThreadCache* tc = caches_.mine();
  return tc != nullptr ? &tc->usage : nullptr;
}

heap::UsageCounters::Usage Heap::usage_now() const {
  heap::UsageCounters::Usage u = usage_.published();
  caches_.add_unpublished_usage(u);
  // Read while other threads count: clamp what a race may leave below 0.
  for (heap::UsageCounters::Figures& f : u.of) {
    for (std::int64_t& c : f.current) c = std::max<std::int64_t>(0, c);
  }
  u.sum_kinds();
  return u;
}

std::size_t Heap::allocated_now() const {
  return static_cast<std::size_t>(
      usage_now().of[heap::UsageCounters::kAll].current[heap::UsageCounters::kBytes]);
}

void Heap::activate(Block* b, std::size_t requested) {
  {
    PtrShard& sh = ptr_shard(b->addr);
    std::lock_guard lock(sh.mutex);
    b->state.set(Block::State::live);
    b->requested.set(requested);
    ++sh.allocations;
  }
  usage_.allocated(usage_local(), size_kind(b->size), static_cast<std::int64_t>(b->size),
                   static_cast<std::int64_t>(requested));
}

void Heap::map_insert(Block* b) {
  PtrShard& sh = ptr_shard(b->addr);
  std::lock_guard lock(sh.mutex);
  sh.blocks[b->addr] = b;
}

void Heap::map_erase(Block* b) {
  PtrShard& sh = ptr_shard(b->addr);
  std::lock_guard lock(sh.mutex);
  sh.blocks.erase(b->addr);
}

// ------------------------------------------------------------- hot paths

void* Heap::allocate(std::size_t bytes, Stream stream) {
  if (bytes == 0) return nullptr;
  if (bytes > kMaxRequest) {
    throw InvalidArgumentError("allocation of " + std::to_string(bytes) +
                               " bytes is larger than any device memory");
  }
  const std::size_t rounded = round_request(bytes);
  // Capture pools and tags allocate into their own pools: slow path.
  if (active_pools_.load(std::memory_order_acquire) == 0 && current_tag() == 0) {
    if (ThreadCache* tc = caches_.mine()) {
      Block* b = caches_.pop(*tc, stream, rounded);
      // Blocks freed by other threads sit in those threads' caches.
      if (b == nullptr) b = caches_.steal(*tc, stream, rounded);
      if (b != nullptr) {
        // Counted by the cache (hits); nobody else holds the block yet.
        b->requested.set(bytes);
        b->state.set(Block::State::live);
        usage_.allocated(&tc->usage, size_kind(b->size), static_cast<std::int64_t>(b->size),
                         static_cast<std::int64_t>(bytes));
        return reinterpret_cast<void*>(b->addr);
      }
    }
  }
  return allocate_slow(bytes, rounded, stream);
}

void Heap::deallocate(void* ptr, Stream stream, bool own_order) {
  if (ptr == nullptr) return;
  const auto addr = reinterpret_cast<std::uintptr_t>(ptr);
  Block* b = nullptr;
  bool fast = false;
  std::size_t size = 0;
  std::size_t requested = 0;
  PoolId pool = 0;
  {
    PtrShard& sh = ptr_shard(addr);
    std::lock_guard lock(sh.mutex);
    auto it = sh.blocks.find(addr);
    if (it == sh.blocks.end() || it->second->state.get() != Block::State::live) {
      throw UnknownPointerError("free of a pointer that is not a live vmmalloc block on device " +
                                std::to_string(context_.device()) +
                                " (double free or foreign pointer)");
    }
    b = it->second;
    if (!own_order && stream != b->stream) {
      // Freed in `stream`'s order: the block's own stream becomes a user too.
      if (std::find(b->extra.begin(), b->extra.end(), b->stream) == b->extra.end()) {
        b->extra.push_back(b->stream);
      }
      b->extra.erase(std::remove(b->extra.begin(), b->extra.end(), stream), b->extra.end());
      b->stream = stream;
    }
    b->epoch = use_.now();
    b->state.set(Block::State::cached);
    ++sh.frees;
    size = b->size;
    requested = b->requested.get();
    pool = b->pool;
    fast = b->extra.empty() && pool == 0;
  }
  ThreadCache* tc = caches_.mine();
  usage_.freed(tc != nullptr ? &tc->usage : nullptr, size_kind(size),
               static_cast<std::int64_t>(size), static_cast<std::int64_t>(requested));
  if (fast && tc != nullptr && caches_.push(*tc, b)) return;
  std::lock_guard lock(mutex_);
  free_locked(b);
  if (pool != 0) {
    auto it = pools_.find(pool);
    if (it != pools_.end() && --it->second.live == 0 && it->second.released &&
        !it->second.asleep) {
      migrate_pool_locked(pool);
    }
  }
}

void Heap::record_stream(void* ptr, Stream stream) {
  const auto addr = reinterpret_cast<std::uintptr_t>(ptr);
  PtrShard& sh = ptr_shard(addr);
  std::lock_guard lock(sh.mutex);
  auto it = sh.blocks.find(addr);
  if (ptr == nullptr || it == sh.blocks.end() || it->second->state.get() != Block::State::live) {
    throw UnknownPointerError("record_stream on a pointer that is not a live vmmalloc block");
  }
  Block* b = it->second;
  if (stream != b->stream &&
      std::find(b->extra.begin(), b->extra.end(), stream) == b->extra.end()) {
    b->extra.push_back(stream);
  }
}

std::size_t Heap::block_size(const void* ptr) const {
  const auto addr = reinterpret_cast<std::uintptr_t>(ptr);
  PtrShard& sh = ptr_shard(addr);
  std::lock_guard lock(sh.mutex);
  auto it = sh.blocks.find(addr);
  if (ptr == nullptr || it == sh.blocks.end() || it->second->state.get() != Block::State::live) {
    throw UnknownPointerError("block_size of a pointer that is not a live vmmalloc block");
  }
  return it->second->size;
}

bool Heap::owns(const void* ptr) const {
  const auto addr = reinterpret_cast<std::uintptr_t>(ptr);
  PtrShard& sh = ptr_shard(addr);
  std::lock_guard lock(sh.mutex);
  auto it = sh.blocks.find(addr);
  return it != sh.blocks.end() && it->second->state.get() == Block::State::live;
}

// ------------------------------------------------------------- slow path

void Heap::release_stream(Stream stream) {
  std::lock_guard lock(mutex_);
  flush_cache_locked();  // its next allocation takes the slow path (revive)
  use_.retire(stream);
}

void* Heap::allocate_slow(std::size_t bytes, std::size_t rounded, Stream stream) {
  std::unique_lock lock(mutex_);
  StreamUse::Round round(use_);                  // one completion query per stream
  const std::uint64_t entry_epoch = use_.now();  // fences recorded from here on are this call's
  use_.revive(stream);  // allocating on it: the handle is (again) a live stream
  const PoolId pool = allocation_pool_locked(stream);
  const SizeKind kind = size_kind(rounded);
  // This thread's cache first (its blocks coalesce with their neighbours);
  // before any memory is mapped, also the lists of other threads' caches
  // that are not in steady use (taking those would only make their owners
  // miss in turn). Under memory pressure, every list (reclaim_for_oom).
  if (ThreadCache* tc = caches_.mine()) flush_thread_cache_locked(*tc);
  refresh_locked();
  if (Block* b = find_fit_locked(pool, kind, stream, rounded)) {
    return take_locked(b, rounded, bytes, stream, true);
  }
  if (flush_idle_caches_locked(heap::kStealIdleTicks) != 0) {
    refresh_locked();
    if (Block* b = find_fit_locked(pool, kind, stream, rounded)) {
      return take_locked(b, rounded, bytes, stream, true);
    }
  }
  // Before mapping more: free memory waiting for other streams' work beyond
  // fenced_free_limit is waited for instead (the oldest of it first).
  if (Block* b = wait_for_fenced_free_locked(lock, pool, kind, stream, rounded, entry_epoch)) {
    return take_locked(b, rounded, bytes, stream);
  }
  std::string cause;
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      Block* b = grow_locked(pool, kind, stream, rounded);
      return take_locked(b, rounded, bytes, stream);
    } catch (const OutOfMemoryError& e) {
      cause = e.what();
    }
    if (attempt == 0) {
      // Memory pressure: wait for the work on the free memory of other
      // streams (those fences only) and for pending unmaps, then retry
      // (counted: PyTorch's num_alloc_retries).
      ++alloc_retries_;
      reclaim_for_oom_locked(stream);
      if (Block* b = find_fit_locked(pool, kind, stream, rounded)) {
        return take_locked(b, rounded, bytes, stream, true);
      }
    }
  }
  // Out of memory outside any pool: a use-on-OOM pool (torch.cuda.MemPool's
  // use_on_oom) lends a free block; freed, it goes back to that pool.
  if (pool == 0) {
    if (Block* b = lend_for_oom_locked(kind, stream, rounded)) {
      return take_locked(b, rounded, bytes, stream, true);
    }
  }
  ++ooms_;
  throw OutOfMemoryError(oom_message_locked(bytes, rounded, pool, cause));
}

Heap::FreeIndex& Heap::index_locked(PoolId pool, SizeKind kind) {
  return pools_[pool].index[static_cast<int>(kind)];
}

void Heap::flush_cache_locked(bool detach) {
  std::vector<Block*> blocks;
  caches_.drain_all(blocks, detach);
  fold_cached_locked(blocks);
}

void Heap::flush_thread_cache_locked(ThreadCache& tc) {
  std::vector<Block*> blocks;
  caches_.drain_one(tc, blocks);
  fold_cached_locked(blocks);
}

std::size_t Heap::flush_idle_caches_locked(std::uint32_t idle_ticks) {
  std::vector<Block*> blocks;
  caches_.drain_idle(blocks, idle_ticks);
  fold_cached_locked(blocks);
  return blocks.size();
}

void Heap::fold_cached_locked(const std::vector<Block*>& blocks) {
  for (Block* b : blocks) free_locked(b);
}

void Heap::index_insert_locked(Block* b) { index_locked(b->pool, b->segment->kind).insert(b); }

void Heap::index_erase_locked(Block* b) { index_locked(b->pool, b->segment->kind).erase(b); }

bool Heap::mergeable(const Block* a, const Block* b) const {
  if (a->pool != b->pool) return false;
  if (a->neutral || b->neutral) return true;
  return a->stream == b->stream && a->extra.empty() && b->extra.empty();
}

void Heap::absorb(Block* dst, const Block* src) {
  if (dst->neutral && src->neutral) return;
  if (dst->neutral) {
    dst->neutral = false;
    dst->stream = src->stream;
    dst->extra = src->extra;
    dst->epoch = src->epoch;
  } else if (!src->neutral) {
    dst->epoch = std::max(dst->epoch, src->epoch);
  }
}

void Heap::merge_next_locked(Block* dst) {
  Block* src = dst->next;
  absorb(dst, src);
  dst->size += src->size;
  dst->next = src->next;
  if (src->next != nullptr) src->next->prev = dst;
  if (src->segment->last == src) src->segment->last = dst;
  map_erase(src);
  delete src;
}

void Heap::free_locked(Block* b, std::vector<Block*>* deleted) {
  b->state.set(Block::State::free);
  if (Block* p = b->prev; p != nullptr && p->state.get() == Block::State::free &&
                          p->end() == b->addr && mergeable(p, b)) {
    index_erase_locked(p);
    absorb(p, b);
    p->size += b->size;
    p->next = b->next;
    if (b->next != nullptr) b->next->prev = p;
    if (b->segment->last == b) b->segment->last = p;
    map_erase(b);
    if (deleted != nullptr) deleted->push_back(b);
    delete b;
    b = p;
  }
  if (Block* n = b->next; n != nullptr && n->state.get() == Block::State::free &&
                          b->end() == n->addr && mergeable(b, n)) {
    index_erase_locked(n);
    absorb(b, n);
    b->size += n->size;
    b->next = n->next;
    if (n->next != nullptr) n->next->prev = b;
    if (b->segment->last == n) b->segment->last = b;
    map_erase(n);
    if (deleted != nullptr) deleted->push_back(n);
    delete n;
  }
  index_insert_locked(b);
}

bool Heap::usable_locked(Block* b, Stream stream) {
  if (b->neutral) return true;
  if (b->stream != stream && !use_.done(b->stream, b->epoch)) return false;
  for (Stream s : b->extra) {
    if (s != stream && !use_.done(s, b->epoch)) return false;
  }
  return true;
}

void Heap::refresh_locked() {
  // Blocks whose users' work is all done become neutral (usable anywhere)
  // and coalesce with their neutral neighbours. Only when some stream's
  // completion frontier moved since the last look.
  std::uint64_t sum = 0;
  for (auto& [pid, ps] : pools_) {
    for (FreeIndex& idx : ps.index) {
      idx.for_each_stream_list([&](Stream s, const heap::SizeSet&) { sum += use_.frontier(s); });
    }
  }
  if (sum == completion_sum_) return;
  completion_sum_ = sum;
  std::vector<Block*> done;
  for (auto& [pid, ps] : pools_) {
    for (FreeIndex& idx : ps.index) {
      idx.for_each_stream_list([&](Stream, const heap::SizeSet& set) {
        for (Block* b : set) {
          bool all = use_.done(b->stream, b->epoch);
          for (Stream x : b->extra) all = all && use_.done(x, b->epoch);
          if (all) done.push_back(b);
        }
      });
    }
  }
  // Re-key them all first, then coalesce (a merge deletes a neighbour that
  // may be further down the list).
  for (Block* b : done) {
    index_erase_locked(b);
    b->neutral = true;
    b->extra.clear();
    index_insert_locked(b);
  }
  std::vector<Block*> deleted;
  for (Block* b : done) {
    if (std::find(deleted.begin(), deleted.end(), b) != deleted.end()) continue;
    index_erase_locked(b);
    free_locked(b, &deleted);
  }
}

Heap::Block* Heap::find_fit_locked(PoolId pool, SizeKind kind, Stream stream, std::size_t size) {
  FreeIndex& idx = index_locked(pool, kind);
  Block* best = idx.best_fit(stream, size, [&](Block* b) { return usable_locked(b, stream); });
  if (best != nullptr) return best;
  // Another stream's free block would fit once its work is done: record the
  // fences that will tell (lazily: only now that a stream wants it).
  // On `stream`'s own list that is the block's other users (record_stream,
  // a free in another stream's order).
  idx.for_each_smallest_fit(size, [&](const Block* b) { request_fences_locked(b, stream); });
  return nullptr;
}

void Heap::request_fences_locked(const Block* b, Stream stream) {
  if (b->stream != stream) use_.request(b->stream, b->epoch);
  for (Stream x : b->extra) {
    if (x != stream) use_.request(x, b->epoch);
  }
}

Heap::Block* Heap::split_locked(Block* b, std::size_t keep) {
  auto* rest = new Block(*b);
  rest->addr = b->addr + keep;
  rest->size = b->size - keep;
  rest->prev = b;
  rest->next = b->next;
  if (b->next != nullptr) b->next->prev = rest;
  b->next = rest;
  if (b->segment->last == b) b->segment->last = rest;
  b->size = keep;
  map_insert(rest);
  index_insert_locked(rest);
  return rest;
}

void* Heap::take_locked(Block* b, std::size_t rounded, std::size_t bytes, Stream stream,
                        bool found) {
  index_erase_locked(b);
  const PoolId owner = b->segment->pool;
  const bool whole = found && owner != 0 && pools_[owner].no_split;
  if (b->size > rounded && !whole) split_locked(b, rounded);
  b->stream = stream;
  b->extra.clear();
  b->neutral = false;
  b->pool = b->segment->pool;
  if (b->pool != 0) ++pools_[b->pool].live;
  activate(b, bytes);
  return reinterpret_cast<void*>(b->addr);
}

}  // namespace vmm
