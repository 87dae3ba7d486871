// Heap implementation. See heap.hpp for the structure and the lock order.
#include "allocator/heap.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <string>

#include "allocator/log.hpp"
#include "allocator/units.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {

// The free-index key of blocks every stream may use.
Stream neutral_key() noexcept { return reinterpret_cast<Stream>(~std::uintptr_t{0}); }

// Best fit looks at this many candidates per stream before giving up on it.
constexpr std::size_t kScan = 32;
// New physical memory for the heap comes in chunks of at most this size:
// smaller chunks are freed (and stitched) independently of their
// neighbours, so a partly used segment pins less memory. On the GPT-2
// training trace, peak physical / peak live was 1.0056 (2 MiB), 1.0087
// (16 MiB), 1.0105 (32 MiB), 1.017 (64 MiB); 16 MiB keeps the handle count
// (one set-access each, on the slow path only) modest.
constexpr std::size_t kMaxNewChunk = 16 * MiB;
// Small pages are stitched from free chunks of at most this size.
constexpr std::size_t kMaxSmallPage = 16 * MiB;
constexpr auto kTrimInterval = std::chrono::milliseconds(20);
// The background trim acts only once free memory has stayed above the limit
// this long: memory freed and reused within a training step is not unmapped
// and recreated every step (on the GPT-2 trace, trimming within a step
// raised peak physical memory by ~0.5%).
constexpr auto kTrimDelay = std::chrono::milliseconds(500);

}  // namespace

Heap::Heap(DeviceContext& context)
    : context_(context),
      backend_(context.backend()),
      granularity_(context.backend().granularity()),
      use_(context.backend()) {
  pools_[0];
  try {
    device_total_ = backend_.memory_info().total_bytes;
  } catch (const Error& e) {
    log(LogLevel::warn, "heap: reading device memory failed: %s", e.what());
  }
  trim_task_ =
      context_.reclaimer().add_background_task([this] { background_trim(); }, kTrimInterval);
}

Heap::~Heap() {
  context_.reclaimer().remove_background_task(trim_task_);
  try {
    std::lock_guard lock(mutex_);
    flush_cache_locked();
    // Every block, live or free, is released in its users' stream order.
    std::unordered_map<Segment*, std::vector<Fence>> fences;
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
            log(LogLevel::debug, "heap teardown: no fence on a stream (capturing or "
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
      retire_locked(seg, std::move(fences[seg]), std::move(mappings));
    }
    mapped_bytes_ = 0;
  } catch (const std::exception& e) {
    log(LogLevel::error, "heap teardown failed: %s", e.what());
  }
}

// ---------------------------------------------------------------- shards

Heap::CacheShard& Heap::cache_shard_of(std::array<CacheShard, kCacheShards>& shards, Stream s,
                                       std::size_t size) {
  const std::size_t h = CacheKeyHash()(CacheKey{s, size});
  return shards[(h ^ (h >> 17) ^ (size >> 9)) % kCacheShards];
}

Heap::PtrShard& Heap::ptr_shard(std::uintptr_t addr) const {
  const std::uint64_t h = (static_cast<std::uint64_t>(addr) >> 9) * 0x9E3779B97F4A7C15ull;
  return ptrs_[h >> 58];
}

Heap::Block* Heap::cache_pop(Stream stream, std::size_t size) {
  CacheShard& sh = cache_shard_of(cache_, stream, size);
  std::lock_guard lock(sh.mutex);
  auto it = sh.lists.find(CacheKey{stream, size});
  if (it == sh.lists.end() || it->second.empty()) return nullptr;
  Block* b = it->second.back();
  it->second.pop_back();
  --sh.blocks;
  return b;
}

void Heap::cache_push(Block* b) {
  CacheShard& sh = cache_shard_of(cache_, b->stream, b->size);
  std::lock_guard lock(sh.mutex);
  sh.lists[CacheKey{b->stream, b->size}].push_back(b);
  ++sh.blocks;
}

void Heap::count_alloc(std::size_t size, std::size_t requested) {
  const std::size_t a = allocated_.fetch_add(size, std::memory_order_relaxed) + size;
  std::size_t p = peak_allocated_.load(std::memory_order_relaxed);
  while (a > p && !peak_allocated_.compare_exchange_weak(p, a, std::memory_order_relaxed)) {
  }
  const std::size_t r = requested_.fetch_add(requested, std::memory_order_relaxed) + requested;
  p = peak_requested_.load(std::memory_order_relaxed);
  while (r > p && !peak_requested_.compare_exchange_weak(p, r, std::memory_order_relaxed)) {
  }
}

void Heap::activate(Block* b, std::size_t requested) {
  {
    PtrShard& sh = ptr_shard(b->addr);
    std::lock_guard lock(sh.mutex);
    b->state.set(Block::State::live);
    b->requested = requested;
    ++sh.active;
    ++sh.allocations;
  }
  count_alloc(b->size, requested);
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
  if (active_pools_.load(std::memory_order_acquire) == 0) {
    if (Block* b = cache_pop(stream, rounded)) {
      activate(b, bytes);
      return reinterpret_cast<void*>(b->addr);
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
    --sh.active;
    ++sh.frees;
    size = b->size;
    requested = b->requested;
    pool = b->pool;
    fast = b->extra.empty() && pool == 0;
  }
  allocated_.fetch_sub(size, std::memory_order_relaxed);
  requested_.fetch_sub(requested, std::memory_order_relaxed);
  if (fast) {
    cache_push(b);
    return;
  }
  std::lock_guard lock(mutex_);
  free_locked(b);
  if (pool != 0) {
    auto it = pools_.find(pool);
    if (it != pools_.end() && --it->second.live == 0 && it->second.released) {
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
  if (stream != b->stream && std::find(b->extra.begin(), b->extra.end(), stream) == b->extra.end()) {
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
  std::lock_guard lock(mutex_);
  use_.revive(stream);  // allocating on it: the handle is (again) a live stream
  const PoolId pool = pool_for_locked(stream);
  const SizeKind kind = size_kind(rounded);
  flush_cache_locked();
  refresh_locked();
  if (Block* b = find_fit_locked(pool, kind, stream, rounded)) {
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
      // streams (those fences only) and for pending unmaps, then retry.
      reclaim_for_oom_locked(stream);
      if (Block* b = find_fit_locked(pool, kind, stream, rounded)) {
        return take_locked(b, rounded, bytes, stream);
      }
    }
  }
  ++ooms_;
  throw OutOfMemoryError(oom_message_locked(bytes, rounded, pool, cause));
}

PoolId Heap::pool_for_locked(Stream stream) const {
  for (const auto& [s, p] : capturing_into_) {
    if (s == stream) return p;
  }
  return 0;
}

Heap::FreeIndex& Heap::index_locked(PoolId pool, SizeKind kind) {
  return pools_[pool].index[static_cast<int>(kind)];
}

void Heap::flush_cache_locked() {
  std::vector<Block*> blocks;
  for (CacheShard& sh : cache_) {
    {
      std::lock_guard lock(sh.mutex);
      if (sh.blocks == 0) continue;
      for (auto& [key, list] : sh.lists) {
        blocks.insert(blocks.end(), list.begin(), list.end());
        list.clear();
      }
      if (sh.lists.size() > 4096) sh.lists.clear();
      sh.blocks = 0;
    }
  }
  for (Block* b : blocks) free_locked(b);
}

void Heap::index_insert_locked(Block* b) {
  index_locked(b->pool, b->segment->kind)
      .by_stream[b->neutral ? neutral_key() : b->stream]
      .insert(b);
}

void Heap::index_erase_locked(Block* b) {
  FreeIndex& idx = index_locked(b->pool, b->segment->kind);
  auto it = idx.by_stream.find(b->neutral ? neutral_key() : b->stream);
  if (it == idx.by_stream.end()) return;
  it->second.erase(b);
  if (it->second.empty()) idx.by_stream.erase(it);
}

bool Heap::mergeable(const Block* a, const Block* b) const {
  if (a->pool != b->pool) return false;
  if (a->neutral || b->neutral) return true;
  return a->stream == b->stream && a->extra.empty() && b->extra.empty();
}

void Heap::free_locked(Block* b, std::vector<Block*>* deleted) {
  // The merged block carries the constraints of both halves.
  auto absorb = [](Block* dst, const Block* src) {
    if (dst->neutral && src->neutral) return;
    if (dst->neutral) {
      dst->neutral = false;
      dst->stream = src->stream;
      dst->extra = src->extra;
      dst->epoch = src->epoch;
    } else if (!src->neutral) {
      dst->epoch = std::max(dst->epoch, src->epoch);
    }
  };
  b->state.set(Block::State::free);
  if (Block* p = b->prev; p != nullptr && p->state.get() == Block::State::free && p->end() == b->addr &&
                          mergeable(p, b)) {
    index_erase_locked(p);
    absorb(p, b);
    p->size += b->size;
    p->next = b->next;
    if (b->next != nullptr) b->next->prev = p;
    map_erase(b);
    if (deleted != nullptr) deleted->push_back(b);
    delete b;
    b = p;
  }
  if (Block* n = b->next; n != nullptr && n->state.get() == Block::State::free && b->end() == n->addr &&
                          mergeable(b, n)) {
    index_erase_locked(n);
    absorb(b, n);
    b->size += n->size;
    b->next = n->next;
    if (n->next != nullptr) n->next->prev = b;
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
      for (auto& [s, set] : idx.by_stream) {
        if (s != neutral_key()) sum += use_.frontier(s);
      }
    }
  }
  if (sum == frontier_sum_) return;
  frontier_sum_ = sum;
  std::vector<Block*> done;
  for (auto& [pid, ps] : pools_) {
    for (FreeIndex& idx : ps.index) {
      for (auto& [s, set] : idx.by_stream) {
        if (s == neutral_key()) continue;
        for (Block* b : set) {
          bool all = use_.done(b->stream, b->epoch);
          for (Stream x : b->extra) all = all && use_.done(x, b->epoch);
          if (all) done.push_back(b);
        }
      }
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
  Block probe;
  probe.size = size;
  probe.addr = 0;
  Block* best = nullptr;
  auto scan = [&](SizeSet& set) {
    auto it = set.lower_bound(&probe);
    for (std::size_t k = 0; it != set.end() && k < kScan; ++it, ++k) {
      Block* b = *it;
      if (best != nullptr && b->size >= best->size) return;
      if (usable_locked(b, stream)) {
        best = b;
        return;
      }
    }
  };
  if (auto it = idx.by_stream.find(stream); it != idx.by_stream.end()) scan(it->second);
  if (auto it = idx.by_stream.find(neutral_key()); it != idx.by_stream.end()) scan(it->second);
  for (auto& [s, set] : idx.by_stream) {
    if (s != stream && s != neutral_key()) scan(set);
  }
  if (best != nullptr) return best;
  // Another stream's free block would fit once its work is done: record the
  // fences that will tell (lazily: only now that a stream wants it).
  for (auto& [s, set] : idx.by_stream) {
    if (s == stream || s == neutral_key()) continue;
    auto it = set.lower_bound(&probe);
    if (it == set.end()) continue;
    Block* b = *it;
    if (b->stream != stream) use_.request(b->stream, b->epoch);
    for (Stream x : b->extra) {
      if (x != stream) use_.request(x, b->epoch);
    }
  }
  return nullptr;
}

void* Heap::take_locked(Block* b, std::size_t rounded, std::size_t bytes, Stream stream) {
  index_erase_locked(b);
  if (b->size > rounded) {
    auto* rest = new Block(*b);
    rest->addr = b->addr + rounded;
    rest->size = b->size - rounded;
    rest->prev = b;
    rest->next = b->next;
    if (b->next != nullptr) b->next->prev = rest;
    b->next = rest;
    b->size = rounded;
    map_insert(rest);
    index_insert_locked(rest);
  }
  b->stream = stream;
  b->extra.clear();
  b->neutral = false;
  b->pool = b->segment->pool;
  if (b->pool != 0) ++pools_[b->pool].live;
  activate(b, bytes);
  return reinterpret_cast<void*>(b->addr);
}

std::vector<std::size_t> Heap::plan_new_chunks(std::size_t bytes) const {
  std::vector<std::size_t> sizes;
  std::size_t left = align_up(bytes, granularity_);
  const std::vector<std::size_t>& classes = context_.pool().chunk_classes();
  for (auto it = classes.rbegin(); it != classes.rend() && left > 0; ++it) {
    if (*it > kMaxNewChunk && *it != classes.front()) continue;
    while (left >= *it) {
      sizes.push_back(*it);
      left -= *it;
    }
  }
  return sizes;
}

bool Heap::unmap_fences_locked(Block* b, std::vector<Fence>& fences) {
  if (b->neutral) return true;
  std::vector<Stream> users = b->extra;
  users.push_back(b->stream);
  std::vector<Fence> out;
  for (Stream s : users) {
    std::optional<Fence> f = use_.fence_for(s, b->epoch);
    if (!f) return false;
    if (*f) out.push_back(*f);
  }
  fences.insert(fences.end(), out.begin(), out.end());
  return true;
}

std::vector<Heap::FreeChunk> Heap::free_chunks_locked(PoolId pool, Stream stream,
                                                      bool for_stitch) {
  std::vector<FreeChunk> out;
  std::vector<std::pair<Stream, bool>> capture_memo;
  auto capturing = [&](Stream s) {
    for (const auto& [ms, c] : capture_memo) {
      if (ms == s) return c;
    }
    const bool c = use_.capturing(s);
    capture_memo.emplace_back(s, c);
    return c;
  };
  std::vector<PoolId> pools{0};
  if (pool != 0) pools.push_back(pool);
  for (PoolId pid : pools) {
    auto pit = pools_.find(pid);
    if (pit == pools_.end()) continue;
    for (FreeIndex& idx : pit->second.index) {
      for (auto& [s, set] : idx.by_stream) {
        for (Block* b : set) {
          if (b->size < granularity_) continue;
          if (for_stitch && !usable_locked(b, stream)) continue;
          if (!b->neutral) {
            // A user without a fence yet that cannot get one (capturing or
            // released stream) keeps the memory mapped where it is.
            bool blocked = !use_.done(b->stream, b->epoch) && capturing(b->stream);
            for (Stream x : b->extra) blocked = blocked || (!use_.done(x, b->epoch) && capturing(x));
            if (blocked) continue;
          }
          const std::vector<Mapping>& chunks = b->segment->chunks;
          auto it = std::lower_bound(chunks.begin(), chunks.end(), b->addr,
                                     [](const Mapping& m, std::uintptr_t a) { return m.va < a; });
          for (; it != chunks.end() && it->end() <= b->end(); ++it) {
            out.push_back({b, static_cast<std::size_t>(it - chunks.begin()), it->chunk.bytes});
          }
        }
      }
    }
  }
  return out;
}

std::vector<Mapping> Heap::carve_locked(Block* b, const std::vector<std::uintptr_t>& chunk_vas) {
  Segment* seg = b->segment;
  index_erase_locked(b);
  map_erase(b);
  std::vector<Mapping> out;
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> pieces;
  std::uintptr_t cursor = b->addr;
  for (std::uintptr_t va : chunk_vas) {
    auto it = std::lower_bound(seg->chunks.begin(), seg->chunks.end(), va,
                               [](const Mapping& m, std::uintptr_t a) { return m.va < a; });
    const Mapping m = *it;
    if (m.va > cursor) pieces.emplace_back(cursor, m.va);
    cursor = m.end();
    out.push_back(m);
    seg->chunks.erase(it);
  }
  if (cursor < b->end()) pieces.emplace_back(cursor, b->end());
  Block* prev = b->prev;
  Block* const next = b->next;
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    Block* nb = k == 0 ? b : new Block(*b);
    nb->addr = pieces[k].first;
    nb->size = pieces[k].second - pieces[k].first;
    nb->prev = prev;
    if (prev != nullptr) prev->next = nb;
    prev = nb;
    map_insert(nb);
    index_insert_locked(nb);
  }
  if (prev != nullptr) prev->next = next;
  if (next != nullptr) next->prev = prev;
  if (pieces.empty()) delete b;
  return out;
}

void Heap::retire_locked(Segment* seg, std::vector<Fence> fences, std::vector<Mapping> mappings) {
  Reclaimer& reclaimer = context_.reclaimer();
  if (!seg->chunks.empty()) {
    if (!mappings.empty()) {
      seg->tickets.push_back(reclaimer.submit(std::move(fences), std::move(mappings)));
    }
    return;
  }
  // The segment's last chunks: its earlier unmaps are taken back and queued
  // with these, so the address range is freed after every one of them.
  for (Reclaimer::Ticket t : seg->tickets) {
    if (std::optional<Reclaimer::Cancelled> c = reclaimer.cancel(t)) {
      fences.insert(fences.end(), c->fences.begin(), c->fences.end());
      mappings.insert(mappings.end(), c->mappings.begin(), c->mappings.end());
    }
  }
  const VaRange range = seg->range;
  segments_.erase(seg);
  delete seg;
  if (mappings.empty()) {
    context_.address_space().deallocate(range);
  } else {
    reclaimer.submit(std::move(fences), std::move(mappings), range);
  }
}

Heap::Block* Heap::grow_locked(PoolId pool, SizeKind kind, Stream stream, std::size_t rounded) {
  const std::size_t need =
      kind == SizeKind::small ? granularity_ : align_up(rounded, granularity_);
  if (device_total_ != 0 && need > device_total_) {
    throw OutOfMemoryError("the request is larger than the device's " +
                           format_bytes(device_total_));
  }
  PhysicalPool& ppool = context_.pool();
  // Unmaps whose fences are done return their chunks to the cache now, so
  // they can be stitched instead of new memory being created.
  if (context_.reclaimer().stats().pending_entries != 0) {
    try {
      context_.reclaimer().poll();
    } catch (const Error& e) {
      log(LogLevel::warn, "heap: polling the reclaimer failed: %s", e.what());
    }
  }

  // Candidates: whole free chunks inside segments, and the pool's cache.
  struct Pick {
    std::size_t bytes;
    std::ptrdiff_t source;  // index into segment chunks, or -1 - class index (cached)
  };
  const std::vector<FreeChunk> seg_chunks = free_chunks_locked(pool, stream, true);
  std::vector<Pick> candidates;
  for (std::size_t i = 0; i < seg_chunks.size(); ++i) {
    candidates.push_back({seg_chunks[i].bytes, static_cast<std::ptrdiff_t>(i)});
  }
  const std::vector<std::size_t>& classes = ppool.chunk_classes();
  const std::vector<std::size_t> counts = ppool.cached_counts();
  for (std::size_t c = 0; c < classes.size() && c < counts.size(); ++c) {
    const std::size_t useful = std::min(counts[c], need / classes[c] + 1);
    for (std::size_t k = 0; k < useful; ++k) {
      candidates.push_back({classes[c], -1 - static_cast<std::ptrdiff_t>(c)});
    }
  }

  std::vector<Pick> chosen;
  std::size_t left = need;
  if (kind == SizeKind::small) {
    const Pick* best = nullptr;
    for (const Pick& p : candidates) {
      if (p.bytes > kMaxSmallPage) continue;
      if (best == nullptr || p.bytes < best->bytes) best = &p;
    }
    if (best != nullptr) {
      chosen.push_back(*best);
      left = 0;
    }
  } else {
    // Largest first while they fit, then the smallest that covers the rest.
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const Pick& a, const Pick& b) { return a.bytes > b.bytes; });
    std::vector<bool> taken(candidates.size(), false);
    for (std::size_t i = 0; i < candidates.size() && left > 0; ++i) {
      if (candidates[i].bytes <= left) {
        taken[i] = true;
        left -= candidates[i].bytes;
        chosen.push_back(candidates[i]);
      }
    }
    if (left > 0) {
      for (std::size_t i = candidates.size(); i-- > 0;) {
        if (!taken[i] && candidates[i].bytes >= left) {
          chosen.push_back(candidates[i]);
          left = 0;
          break;
        }
      }
    }
  }

  // Fences that guard the old addresses of the stitched chunks. A block
  // whose fences cannot be recorded keeps its chunks; new memory replaces them.
  std::map<Block*, std::vector<std::uintptr_t>> by_block;  // block -> chunk addresses
  for (const Pick& p : chosen) {
    if (p.source >= 0) {
      const FreeChunk& fc = seg_chunks[static_cast<std::size_t>(p.source)];
      by_block[fc.block].push_back(fc.block->segment->chunks[fc.index].va);
    }
  }
  auto chunk_at = [](Block* b, std::uintptr_t va) -> const Chunk& {
    const std::vector<Mapping>& chunks = b->segment->chunks;
    return std::lower_bound(chunks.begin(), chunks.end(), va,
                            [](const Mapping& m, std::uintptr_t a) { return m.va < a; })
        ->chunk;
  };
  std::map<Block*, std::vector<Fence>> fences;
  bool owned = false;  // some stitched memory is still ordered on `stream`
  for (auto it = by_block.begin(); it != by_block.end();) {
    std::vector<Fence> f;
    if (!unmap_fences_locked(it->first, f)) {
      for (std::uintptr_t va : it->second) left += chunk_at(it->first, va).bytes;
      it = by_block.erase(it);
      continue;
    }
    if (!it->first->neutral) owned = true;
    std::sort(it->second.begin(), it->second.end());
    fences[it->first] = std::move(f);
    ++it;
  }
  std::vector<std::size_t> sizes;
  for (const Pick& p : chosen) {
    if (p.source < 0) sizes.push_back(classes[static_cast<std::size_t>(-1 - p.source)]);
  }
  const std::vector<std::size_t> fresh = plan_new_chunks(left);
  sizes.insert(sizes.end(), fresh.begin(), fresh.end());

  std::vector<Chunk> acquired;
  if (!sizes.empty()) acquired = ppool.acquire(sizes);  // OutOfMemoryError: nothing changed
  std::size_t total = 0;
  std::vector<Chunk> layout;
  for (auto& [b, idx] : by_block) {
    for (std::uintptr_t va : idx) layout.push_back(chunk_at(b, va));
  }
  const std::size_t stitched = layout.size();
  layout.insert(layout.end(), acquired.begin(), acquired.end());
  for (const Chunk& c : layout) total += c.bytes;

  VaRange range;
  try {
    range = context_.address_space().allocate(total);
  } catch (...) {
    ppool.give_back(acquired);
    throw;
  }
  std::vector<Mapping> maps;
  try {
    std::uintptr_t va = range.base;
    for (const Chunk& c : layout) {
      backend_.map(va, c.bytes, c.handle);
      maps.push_back({va, c, false});
      va += c.bytes;
    }
    backend_.set_access(range.base, total);
  } catch (...) {
    bool clean = true;
    for (const Mapping& m : maps) {
      try {
        backend_.unmap(m.va, m.chunk.bytes);
      } catch (const Error& e) {
        clean = false;
        log(LogLevel::error, "undoing a failed heap grow: unmap failed: %s", e.what());
      }
    }
    ppool.give_back(acquired);
    if (clean) context_.address_space().deallocate(range);
    throw;
  }

  // Commit: the stitched chunks leave their old segments (their old
  // addresses are unmapped once their fences complete).
  for (auto& [b, idx] : by_block) {
    Segment* old = b->segment;
    std::vector<Mapping> aliases = carve_locked(b, idx);
    for (Mapping& m : aliases) m.alias = true;
    retire_locked(old, std::move(fences[b]), std::move(aliases));
  }
  auto* seg = new Segment();
  seg->range = range;
  seg->kind = kind;
  seg->pool = pool;
  seg->chunks = std::move(maps);
  segments_.insert(seg);
  for (const Chunk& c : acquired) mapped_bytes_ += c.bytes;
  if (stitched != 0 || acquired.size() != fresh.size()) ++stitches_;

  auto* nb = new Block();
  nb->addr = range.base;
  nb->size = total;
  nb->segment = seg;
  nb->pool = pool;
  nb->state.set(Block::State::free);
  nb->neutral = !owned;
  nb->stream = stream;
  nb->epoch = use_.now();
  map_insert(nb);
  index_insert_locked(nb);
  note_reserved_locked();
  return nb;
}

void Heap::note_reserved_locked() {
  const Reclaimer::Accounting a = context_.reclaimer().accounting();
  const std::size_t reserved = mapped_bytes_ + a.pool.cached_bytes + a.reclaimer.pending_bytes;
  peak_reserved_ = std::max(peak_reserved_, reserved);
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
    flush_cache_locked();
    refresh_locked();
    released = release_free_chunks_locked(false, std::numeric_limits<std::size_t>::max());
  }
  return released + context_.pool().trim(0);
}

std::size_t Heap::background_trim() {
  {
    std::lock_guard lock(mutex_);
    const std::size_t allocated = allocated_.load(std::memory_order_relaxed);
    const std::size_t free_mapped = mapped_bytes_ > allocated ? mapped_bytes_ - allocated : 0;
    const auto now = std::chrono::steady_clock::now();
    if (free_mapped + context_.pool().stats().cached_bytes <= context_.pool().cache_limit()) {
      over_limit_since_.reset();
      return 0;
    }
    if (!over_limit_since_) over_limit_since_ = now;
    if (now - *over_limit_since_ < kTrimDelay) return 0;
  }
  return trim_to_limit();
}

std::size_t Heap::trim_to_limit() {
  std::lock_guard lock(mutex_);
  const PoolStats ps = context_.pool().stats();
  const std::size_t allocated = allocated_.load(std::memory_order_relaxed);
  const std::size_t free_mapped = mapped_bytes_ > allocated ? mapped_bytes_ - allocated : 0;
  const std::size_t limit = context_.pool().cache_limit();
  if (free_mapped + ps.cached_bytes <= limit) return 0;
  refresh_locked();
  return release_free_chunks_locked(true, free_mapped + ps.cached_bytes - limit);
}

void Heap::reclaim_for_oom_locked(Stream stream) {
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
      for (auto& [s, set] : idx.by_stream) {
        for (Block* b : set) {
          if (b->neutral) continue;
          note(b->stream, b->epoch);
          for (Stream x : b->extra) note(x, b->epoch);
        }
      }
    }
  }
  for (const auto& [s, e] : newest) use_.wait(s, e);
  try {
    context_.reclaimer().drain();
  } catch (const Error& e) {
    log(LogLevel::warn, "heap: draining the reclaimer under memory pressure failed: %s", e.what());
  }
  refresh_locked();
}

std::string Heap::oom_message_locked(std::size_t bytes, std::size_t rounded, PoolId pool,
                                     const std::string& cause) {
  const Reclaimer::Accounting a = context_.reclaimer().accounting();
  DeviceMemoryInfo info;
  try {
    info = backend_.memory_info();
  } catch (const Error&) {
  }
  const std::size_t allocated = allocated_.load();
  const std::size_t free_mapped = mapped_bytes_ > allocated ? mapped_bytes_ - allocated : 0;
  const std::size_t cached = free_mapped + a.pool.cached_bytes;
  const std::size_t pending = a.reclaimer.pending_bytes;
  const std::size_t held = mapped_bytes_ + a.pool.cached_bytes + pending;
  const std::size_t cap = a.pool.memory_cap_bytes;

  // The largest request that would fit: the largest free block, or whole
  // free chunks plus the pool's cache plus what may still be created.
  std::size_t largest_block = 0;
  for (int k = 0; k < kSizeKinds; ++k) {
    for (auto& [s, set] : index_locked(pool, static_cast<SizeKind>(k)).by_stream) {
      if (!set.empty()) largest_block = std::max(largest_block, (*set.rbegin())->size);
    }
  }
  std::size_t whole_chunks = 0;
  for (const FreeChunk& fc : free_chunks_locked(pool, nullptr, false)) whole_chunks += fc.bytes;
  std::size_t headroom = info.free_bytes;
  if (cap != 0) {
    headroom = std::min(headroom, cap > a.pool.created_bytes ? cap - a.pool.created_bytes : 0);
  }
  headroom = align_down(headroom, granularity_);
  const std::size_t largest =
      std::max(largest_block, whole_chunks + a.pool.cached_bytes + headroom);

  const std::string dev = std::to_string(context_.device());
  std::string msg = "out of memory on device " + dev + ". Tried to allocate " +
                    format_bytes(bytes) + " (" + format_bytes(rounded) + " rounded). Device " +
                    dev + " has a total capacity of " + format_bytes(info.total_bytes) +
                    " of which " + format_bytes(info.free_bytes) + " is free";
  if (cap != 0) msg += " (memory cap " + format_bytes(cap) + ")";
  msg += ". vmmalloc holds " + format_bytes(held) + ": " + format_bytes(allocated) +
         " in use, " + format_bytes(cached) + " cached, " + format_bytes(pending) +
         " pending reclaim. The largest request that would fit is " + format_bytes(largest) +
         ". (" + cause + ")";
  return msg;
}

// ------------------------------------------------------------ graph pools

PoolId Heap::create_pool() {
  std::lock_guard lock(mutex_);
  const PoolId id = next_pool_++;
  pools_[id];
  return id;
}

void Heap::begin_pool(PoolId pool, Stream stream) {
  std::lock_guard lock(mutex_);
  auto it = pools_.find(pool);
  if (pool == 0 || it == pools_.end() || it->second.released) {
    throw InvalidArgumentError("begin_pool: " + std::to_string(pool) + " is not a live graph pool");
  }
  for (const auto& [s, p] : capturing_into_) {
    if (s == stream) {
      throw InvalidArgumentError("begin_pool: the stream already allocates into pool " +
                                 std::to_string(p));
    }
  }
  capturing_into_.emplace_back(stream, pool);
  active_pools_.store(capturing_into_.size(), std::memory_order_release);
}

void Heap::end_pool(PoolId pool) {
  std::lock_guard lock(mutex_);
  if (pool == 0 || pools_.find(pool) == pools_.end()) {
    throw InvalidArgumentError("end_pool: " + std::to_string(pool) + " is not a graph pool");
  }
  std::erase_if(capturing_into_, [&](const auto& e) { return e.second == pool; });
  active_pools_.store(capturing_into_.size(), std::memory_order_release);
}

void Heap::release_pool(PoolId pool) {
  std::lock_guard lock(mutex_);
  auto it = pools_.find(pool);
  if (pool == 0 || it == pools_.end() || it->second.released) {
    throw InvalidArgumentError("release_pool: " + std::to_string(pool) +
                               " is not a live graph pool");
  }
  std::erase_if(capturing_into_, [&](const auto& e) { return e.second == pool; });
  active_pools_.store(capturing_into_.size(), std::memory_order_release);
  it->second.released = true;
  if (it->second.live == 0) migrate_pool_locked(pool);
}

void Heap::migrate_pool_locked(PoolId pool) {
  auto it = pools_.find(pool);
  if (it == pools_.end()) return;
  for (Segment* seg : segments_) {
    if (seg->pool == pool) seg->pool = 0;
  }
  for (int k = 0; k < kSizeKinds; ++k) {
    for (auto& [s, set] : it->second.index[k].by_stream) {
      for (Block* b : set) {
        b->pool = 0;
        pools_[0].index[k].by_stream[s].insert(b);
      }
    }
  }
  pools_.erase(pool);
}

// ------------------------------------------------------------------ stats

AllocatorStats Heap::stats() const {
  AllocatorStats s;
  s.allocated_bytes = allocated_.load();
  s.peak_allocated_bytes = peak_allocated_.load();
  s.requested_bytes = requested_.load();
  s.peak_requested_bytes = peak_requested_.load();
  for (PtrShard& sh : ptrs_) {
    std::lock_guard lock(sh.mutex);
    s.active_blocks += sh.active;
    s.allocations += sh.allocations;
    s.frees += sh.frees;
  }
  std::size_t peak_reserved = 0;
  {
    std::lock_guard lock(mutex_);
    s.mapped_bytes = mapped_bytes_;
    s.stitches = stitches_;
    s.ooms = ooms_;
    peak_reserved = peak_reserved_;
  }
  const Reclaimer::Accounting a = context_.reclaimer().accounting();
  s.cached_bytes = a.pool.cached_bytes;
  s.pending_bytes = a.reclaimer.pending_bytes;
  s.reserved_bytes = s.mapped_bytes + s.cached_bytes + s.pending_bytes;
  s.peak_reserved_bytes = std::max(peak_reserved, s.reserved_bytes);
  s.inactive_split_bytes =
      s.mapped_bytes > s.allocated_bytes ? s.mapped_bytes - s.allocated_bytes : 0;
  s.chunk_creates = a.pool.creates;
  s.chunk_releases = a.pool.releases;
  return s;
}

void Heap::reset_peak_stats() {
  peak_allocated_.store(allocated_.load());
  peak_requested_.store(requested_.load());
  std::lock_guard lock(mutex_);
  const Reclaimer::Accounting a = context_.reclaimer().accounting();
  peak_reserved_ = mapped_bytes_ + a.pool.cached_bytes + a.reclaimer.pending_bytes;
}

}  // namespace vmm
