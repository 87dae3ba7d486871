// Heap implementation. See heap.hpp for the structure and the lock order.
#include "allocator/heap/heap.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "allocator/record/event_ring.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {

// The free-index key of blocks every stream may use.
Stream neutral_key() noexcept { return reinterpret_cast<Stream>(~std::uintptr_t{0}); }

// Best fit looks at this many candidates per stream before giving up on it.
constexpr std::size_t kScan = 32;
// New physical memory comes in chunks of at most 1/kChunksPerRequest of the
// request and at most kMaxNewChunk. A chunk is the unit of stitching and
// unmapping: where a block ends inside a chunk and its neighbour is free,
// the rest of that chunk can serve only requests that fit in it, so
// smaller chunks pin less. Larger ones mean fewer handles (each costs a
// create, a map and its share of a set-access). Bounding the chunk by the
// request keeps what a block's end can pin proportional to the block.
// Measured (host backend, bench/traces; peak physical / peak live, driver
// calls) with growth at the frontier: all 2 MiB chunks gave 1.0026 /
// 1.0054 / 1.0034 / 1.0192 on gpt2-train / bert-mlm-train / llama-train /
// llama-generate with 19.5k / 22.1k / 27.7k / 2.2k calls; 16 MiB chunks
// 1.0067 / 1.0057 / 1.0089 / 1.075 (llama-generate's 29-80 MiB activations
// pin whole chunks) with 4.7k / 5.2k / 8.6k / 1k calls; this rule 1.0037 /
// 1.0057 / 1.0036 / 1.0192 with 7.2k / 11.4k / 16.6k / 2.2k calls.
constexpr std::size_t kMaxNewChunk = 16 * MiB;
constexpr std::size_t kChunksPerRequest = 32;
// Small pages are stitched from free chunks of at most this size.
constexpr std::size_t kMaxSmallPage = 16 * MiB;
// The smallest address range of a growing segment (see frontier_span_locked).
constexpr std::size_t kMinFrontierSpan = GiB;
// The general pool's first segment for large blocks spans this fraction of
// an address-space reservation (the device's memory, with the default
// va_reservation_factor of 4): a block at its frontier can then grow into
// fresh memory mapped right behind it for as long as the device has memory,
// instead of being stitched into a new, larger segment (which maps every
// chunk a second time and unmaps the old addresses later). Measured (host
// backend, growing one buffer 0.5 -> 5 GiB by free + allocate, as
// bench/torch_workspace.py's `vmmalloc` system does): 1 GiB first spans
// made 320 creates, 768 maps and 192 unmaps; this rule 320 creates, 320
// maps, no unmap. On bench/traces (host backend, host_device_memory:144G
// like an H200) peak physical / peak live moved by +0.0014 at most
// (gpt2-train 1.0024 -> 1.0038) and driver calls by -13% to +1%.
constexpr std::size_t kLargeSpanDivisor = 4;
constexpr auto kTrimInterval = std::chrono::milliseconds(20);
// The background trim acts only once free memory has stayed above the limit
// this long: memory freed and reused within a training step is not unmapped
// and recreated every step (on the GPT-2 trace, trimming within a step
// raised peak physical memory by ~0.5%).
constexpr auto kTrimDelay = std::chrono::milliseconds(500);
// The background trim keeps what the heap's demand (bytes allocated) peaked
// at over the last kDemandWindow, plus the cache limit: a workload that
// repeats (training steps) keeps its memory mapped from one repetition to
// the next instead of unmapping and recreating it every time. Kept as the
// peaks of Heap::kDemandBuckets slices of the window.
constexpr auto kDemandWindow = std::chrono::seconds(5);
// kTrimDelay in ticks of the background trim (one per kTrimInterval): a
// thread cache's list unused this long is idle.
constexpr std::uint32_t kIdleTicks = static_cast<std::uint32_t>(kTrimDelay / kTrimInterval);
// Before mapping memory, a miss also takes the lists of other threads'
// caches unused for this many ticks (one full tick: at least 20 ms).
constexpr std::uint32_t kStealIdleTicks = 2;
// A thread cache's table starts with this many slots (a power of two).
constexpr std::size_t kCacheSlots = 16;

std::atomic<std::uint64_t> g_next_heap_id{1};

}  // namespace

// Live heaps by id: a thread that exits hands its caches back only to heaps
// that still exist. Never destroyed (threads may exit during static
// destruction).
struct Heap::Registry {
  std::mutex mutex;
  std::unordered_map<std::uint64_t, Heap*> heaps;
};

Heap::Registry& Heap::registry() {
  static Registry* r = new Registry();
  return *r;
}

Heap::Heap(DeviceContext& context)
    : context_(context),
      backend_(context.backend()),
      granularity_(context.backend().granularity()),
      use_(context.backend()),
      id_(g_next_heap_id.fetch_add(1, std::memory_order_relaxed)) {
  pools_[0];
  try {
    device_total_ = backend_.memory_info().total_bytes;
  } catch (const Error& e) {
    log(LogLevel::warn, "heap: reading device memory failed: %s", e.what());
  }
  trim_task_ =
      context_.reclaimer().add_background_task([this] { background_trim(); }, kTrimInterval);
  // Last, so a heap in the registry is always destroyed (and leaves it).
  try {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    r.heaps.emplace(id_, this);
  } catch (...) {
    context_.reclaimer().remove_background_task(trim_task_);
    throw;
  }
}

Heap::~Heap() {
  context_.reclaimer().remove_background_task(trim_task_);
  {
    // From now on no exiting thread hands a cache back here.
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    r.heaps.erase(id_);
  }
  try {
    std::lock_guard lock(mutex_);
    flush_cache_locked(/*detach=*/true);  // no thread uses a cache of this heap again
    for (auto& [pid, ps] : pools_) ps.frontier.fill(nullptr);  // every segment goes
    // Every block, live or free, is released in its users' stream order;
    // aliases of dead placeholders after their own fences.
    std::unordered_map<Segment*, std::vector<Fence>> fences;
    std::unordered_map<Segment*, std::vector<Mapping>> aliases;
    for (Segment* seg : segments_) bury_placeholders_locked(seg, fences[seg], aliases[seg]);
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

// ---------------------------------------------------------- thread caches

namespace {

std::size_t list_hash(Stream stream, std::size_t size) noexcept {
  const auto x = (static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(stream)) >> 4) ^
                 (static_cast<std::uint64_t>(size) >> 9) * 0x9E3779B97F4A7C15ull;
  return static_cast<std::size_t>(x ^ (x >> 29));
}

}  // namespace

Heap::ThreadCache::List* Heap::ThreadCache::find(Stream stream, std::size_t size) noexcept {
  if (table.empty()) return nullptr;
  const std::size_t mask = table.size() - 1;
  for (std::size_t i = list_hash(stream, size) & mask;; i = (i + 1) & mask) {
    List& l = table[i];
    if (l.size == 0) return nullptr;
    if (l.size == size && l.stream == stream) return &l;
  }
}

Heap::ThreadCache::List& Heap::ThreadCache::find_or_add(Stream stream, std::size_t size) {
  if (List* l = find(stream, size)) return *l;
  if (2 * (slots_used + 1) > table.size()) {
    // Grow (at most half full, so probes stay short and find() ends).
    std::vector<List> old = std::move(table);
    table.assign(std::max(kCacheSlots, 2 * old.size()), List{});
    const std::size_t mask = table.size() - 1;
    for (List& l : old) {
      if (l.size == 0) continue;
      std::size_t i = list_hash(l.stream, l.size) & mask;
      while (table[i].size != 0) i = (i + 1) & mask;
      table[i] = std::move(l);
    }
  }
  const std::size_t mask = table.size() - 1;
  std::size_t i = list_hash(stream, size) & mask;
  while (table[i].size != 0) i = (i + 1) & mask;
  table[i].stream = stream;
  table[i].size = size;
  ++slots_used;
  return table[i];
}

void Heap::ThreadCache::take(std::vector<Block*>& out, std::optional<std::uint32_t> idle_before) {
  if (blocks == 0 && !idle_before) {
    // Nothing cached: only drop the slots, so sizes seen once do not pile up.
    if (slots_used != 0) {
      table.assign(kCacheSlots, List{});
      slots_used = 0;
    }
    return;
  }
  std::vector<List> keep;
  for (List& l : table) {
    if (l.size == 0) continue;
    // "Idle": unused for kIdleTicks before `idle_before` (wrap-around safe).
    if (idle_before && static_cast<std::int32_t>(*idle_before - l.last_use) < 0) {
      keep.push_back(std::move(l));
      continue;
    }
    out.insert(out.end(), l.blocks.begin(), l.blocks.end());
    blocks -= l.blocks.size();
  }
  table.assign(kCacheSlots, List{});
  slots_used = 0;
  for (List& l : keep) {
    List& n = find_or_add(l.stream, l.size);
    n.last_use = l.last_use;
    n.blocks = std::move(l.blocks);
  }
}

Heap::ThreadCache* Heap::thread_cache() {
  // The last cache used, in trivially destructible thread-locals (plain
  // TLS reads); the caches themselves in a holder whose destructor hands
  // them back when the thread exits.
  thread_local std::uint64_t last_id = 0;
  thread_local ThreadCache* last = nullptr;
  thread_local bool exiting = false;
  if (last_id == id_) return last;
  if (exiting) return nullptr;
  struct Holder {
    std::vector<std::pair<std::uint64_t, std::shared_ptr<ThreadCache>>> caches;
    ~Holder() {
      exiting = true;
      last_id = 0;
      last = nullptr;
      Registry& r = registry();
      std::lock_guard lock(r.mutex);
      for (auto& [id, tc] : caches) {
        auto it = r.heaps.find(id);
        if (it != r.heaps.end()) it->second->adopt_cache(*tc);
      }
    }
  };
  thread_local Holder holder;
  ThreadCache* found = nullptr;
  for (auto& [id, tc] : holder.caches) {
    if (id == id_) found = tc.get();
  }
  if (found == nullptr) {
    // First use on this thread. Caches of heaps that are gone go first.
    std::erase_if(holder.caches, [](auto& e) {
      std::lock_guard lock(e.second->lock);
      return e.second->detached;
    });
    auto tc = std::make_shared<ThreadCache>();
    {
      std::lock_guard lock(caches_mutex_);
      caches_.push_back(tc);
    }
    holder.caches.emplace_back(id_, tc);
    found = tc.get();
  }
  last_id = id_;
  last = found;
  return found;
}

Heap::Block* Heap::cache_pop(ThreadCache& tc, Stream stream, std::size_t size) {
  std::lock_guard lock(tc.lock);
  ThreadCache::List* l = tc.find(stream, size);
  if (l == nullptr || l->blocks.empty()) return nullptr;
  Block* b = l->blocks.back();
  l->blocks.pop_back();
  l->last_use = trim_tick_.load(std::memory_order_relaxed);
  --tc.blocks;
  ++tc.hits;
  return b;
}

Heap::Block* Heap::cache_steal(ThreadCache& tc, Stream stream, std::size_t size) {
  std::lock_guard caches_lock(caches_mutex_);
  for (const std::shared_ptr<ThreadCache>& other : caches_) {
    if (other.get() == &tc) continue;
    if (Block* b = cache_pop(*other, stream, size)) return b;
  }
  return nullptr;
}

bool Heap::cache_push(ThreadCache& tc, Block* b) {
  std::lock_guard lock(tc.lock);
  if (tc.detached) return false;
  ThreadCache::List& l = tc.find_or_add(b->stream, b->size);
  l.blocks.push_back(b);
  l.last_use = trim_tick_.load(std::memory_order_relaxed);
  ++tc.blocks;
  return true;
}

void Heap::adopt_cache(ThreadCache& tc) {
  std::lock_guard lock(mutex_);
  std::vector<Block*> blocks;
  {
    std::lock_guard caches_lock(caches_mutex_);
    {
      std::lock_guard tc_lock(tc.lock);
      tc.take(blocks);
      tc.detached = true;
      detached_hits_ += tc.hits;
      tc.hits = 0;
    }
    std::erase_if(caches_, [&](const std::shared_ptr<ThreadCache>& c) { return c.get() == &tc; });
  }
  fold_cached_locked(blocks);
}

void Heap::count_alloc(std::size_t size, std::size_t requested) {
  const std::size_t a = allocated_.fetch_add(size, std::memory_order_relaxed) + size;
  std::size_t p = peak_allocated_.load(std::memory_order_relaxed);
  while (a > p && !peak_allocated_.compare_exchange_weak(p, a, std::memory_order_relaxed)) {
  }
  p = demand_peak_.load(std::memory_order_relaxed);
  while (a > p && !demand_peak_.compare_exchange_weak(p, a, std::memory_order_relaxed)) {
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
    b->requested.set(requested);
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
    if (ThreadCache* tc = thread_cache()) {
      Block* b = cache_pop(*tc, stream, rounded);
      // Blocks freed by other threads sit in those threads' caches.
      if (b == nullptr) b = cache_steal(*tc, stream, rounded);
      if (b != nullptr) {
        // Counted by the cache (hits); nobody else holds the block yet.
        b->requested.set(bytes);
        b->state.set(Block::State::live);
        count_alloc(b->size, bytes);
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
  allocated_.fetch_sub(size, std::memory_order_relaxed);
  requested_.fetch_sub(requested, std::memory_order_relaxed);
  if (fast) {
    ThreadCache* tc = thread_cache();
    if (tc != nullptr && cache_push(*tc, b)) return;
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
  const PoolId pool = pool_for_locked(stream);
  const SizeKind kind = size_kind(rounded);
  // This thread's cache first (its blocks coalesce with their neighbours);
  // before any memory is mapped, also the lists of other threads' caches
  // that are not in steady use (taking those would only make their owners
  // miss in turn). Under memory pressure, every list (reclaim_for_oom).
  if (ThreadCache* tc = thread_cache()) flush_thread_cache_locked(*tc);
  refresh_locked();
  if (Block* b = find_fit_locked(pool, kind, stream, rounded)) {
    return take_locked(b, rounded, bytes, stream);
  }
  if (flush_idle_caches_locked(kStealIdleTicks) != 0) {
    refresh_locked();
    if (Block* b = find_fit_locked(pool, kind, stream, rounded)) {
      return take_locked(b, rounded, bytes, stream);
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

void Heap::flush_cache_locked(bool detach) {
  std::vector<Block*> blocks;
  {
    std::lock_guard caches_lock(caches_mutex_);
    for (const std::shared_ptr<ThreadCache>& tc : caches_) {
      std::lock_guard lock(tc->lock);
      tc->take(blocks);
      if (detach) {
        tc->detached = true;
        detached_hits_ += tc->hits;
        tc->hits = 0;
      }
    }
    if (detach) caches_.clear();
  }
  fold_cached_locked(blocks);
}

void Heap::flush_thread_cache_locked(ThreadCache& tc) {
  std::vector<Block*> blocks;
  {
    std::lock_guard lock(tc.lock);
    tc.take(blocks);
  }
  fold_cached_locked(blocks);
}

std::size_t Heap::flush_idle_caches_locked(std::uint32_t idle_ticks) {
  const std::uint32_t idle_before = trim_tick_.load(std::memory_order_relaxed) - idle_ticks;
  std::vector<Block*> blocks;
  {
    std::lock_guard caches_lock(caches_mutex_);
    for (const std::shared_ptr<ThreadCache>& tc : caches_) {
      std::lock_guard lock(tc->lock);
      if (tc->blocks != 0) tc->take(blocks, idle_before);
    }
  }
  fold_cached_locked(blocks);
  return blocks.size();
}

void Heap::fold_cached_locked(const std::vector<Block*>& blocks) {
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
  // On `stream`'s own list that is the block's other users (record_stream,
  // a free in another stream's order).
  for (auto& [s, set] : idx.by_stream) {
    if (s == neutral_key()) continue;
    auto it = set.lower_bound(&probe);
    if (it == set.end()) continue;
    request_fences_locked(*it, stream);
  }
  return nullptr;
}

void Heap::request_fences_locked(const Block* b, Stream stream) {
  if (b->stream != stream) use_.request(b->stream, b->epoch);
  for (Stream x : b->extra) {
    if (x != stream) use_.request(x, b->epoch);
  }
}

Heap::FencedFree Heap::fenced_free_locked(PoolId pool) {
  FencedFree out;
  for (FreeIndex& idx : pools_[pool].index) {
    for (auto& [s, set] : idx.by_stream) {
      if (s == neutral_key()) continue;
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
    }
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
    if (b->segment->last == b) b->segment->last = rest;
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

std::vector<std::size_t> Heap::plan_new_chunks(std::size_t bytes, std::size_t request) const {
  std::vector<std::size_t> sizes;
  std::size_t left = align_up(bytes, granularity_);
  const std::vector<std::size_t>& classes = context_.pool().chunk_classes();
  const std::size_t largest = std::min(kMaxNewChunk, std::bit_floor(request / kChunksPerRequest));
  for (auto it = classes.rbegin(); it != classes.rend() && left > 0; ++it) {
    if (*it > largest && *it != classes.front()) continue;
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

std::vector<Heap::FreeChunk> Heap::free_chunks_locked(PoolId pool, Stream stream, bool for_stitch) {
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
            for (Stream x : b->extra)
              blocked = blocked || (!use_.done(x, b->epoch) && capturing(x));
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

std::vector<Mapping> Heap::carve_locked(Block* b, const std::vector<std::uintptr_t>& chunk_vas,
                                        std::vector<Burial>* buried) {
  Segment* seg = b->segment;
  index_erase_locked(b);
  map_erase(b);
  std::vector<Mapping> out;
  // What b becomes, in address order: free pieces, and (if `buried`) the
  // carved runs as dead placeholders.
  struct Piece {
    std::uintptr_t begin;
    std::uintptr_t end;
    bool carved;
    std::vector<Mapping> mappings;
  };
  std::vector<Piece> pieces;
  std::uintptr_t cursor = b->addr;
  for (std::uintptr_t va : chunk_vas) {
    auto it = std::lower_bound(seg->chunks.begin(), seg->chunks.end(), va,
                               [](const Mapping& m, std::uintptr_t a) { return m.va < a; });
    const Mapping m = *it;
    if (m.va > cursor) pieces.push_back({cursor, m.va, false, {}});
    if (buried != nullptr) {
      if (!pieces.empty() && pieces.back().carved && pieces.back().end == m.va) {
        pieces.back().end = m.end();
        pieces.back().mappings.push_back(m);
      } else {
        pieces.push_back({m.va, m.end(), true, {m}});
      }
    }
    cursor = m.end();
    out.push_back(m);
    seg->chunks.erase(it);
  }
  if (cursor < b->end()) pieces.push_back({cursor, b->end(), false, {}});
  Block* prev = b->prev;
  Block* const next = b->next;
  bool b_used = false;
  for (Piece& p : pieces) {
    Block* nb = nullptr;
    if (!p.carved && !b_used) {
      nb = b;
      b_used = true;
    } else {
      nb = new Block(*b);
    }
    nb->addr = p.begin;
    nb->size = p.end - p.begin;
    nb->prev = prev;
    if (prev != nullptr) prev->next = nb;
    prev = nb;
    if (p.carved) {
      nb->state.set(Block::State::dead);
      nb->extra.clear();
      buried->push_back({nb, std::move(p.mappings), {}});
    } else {
      map_insert(nb);
      index_insert_locked(nb);
    }
  }
  if (prev != nullptr) prev->next = next;
  if (next != nullptr) next->prev = prev;
  if (seg->last == b) seg->last = prev;
  if (!b_used) delete b;
  return out;
}

void Heap::reap_dead_locked() {
  for (auto it = dead_.begin(); it != dead_.end();) {
    Burial& r = it->second;
    bool done = true;
    for (const Fence& f : r.fences) {
      try {
        if (!f.completed()) {
          done = false;
          break;
        }
      } catch (const Error& e) {
        log(LogLevel::warn, "heap: fence query failed (alias kept mapped): %s", e.what());
        done = false;
        break;
      }
    }
    if (!done) {
      ++it;
      continue;
    }
    std::vector<Mapping> still_mapped;
    for (const Mapping& m : r.aliases) {
      try {
        backend_.unmap(m.va, m.chunk.bytes);
      } catch (const Error& e) {
        log(LogLevel::warn, "heap: unmapping an alias failed (will retry): %s", e.what());
        still_mapped.push_back(m);
      }
    }
    events::record_unmapped(context_.device(), r.aliases, still_mapped);
    if (!still_mapped.empty()) {
      r.aliases = std::move(still_mapped);
      ++it;
      continue;
    }
    Block* ph = it->first;
    it = dead_.erase(it);
    make_vacant_locked(ph);
  }
}

void Heap::make_vacant_locked(Block* v) {
  Segment* seg = v->segment;
  auto& vacant = pools_[seg->pool].vacant[static_cast<int>(seg->kind)];
  v->state.set(Block::State::vacant);
  auto unlink = [&](Block* x) {
    if (x->prev != nullptr) x->prev->next = x->next;
    if (x->next != nullptr) x->next->prev = x->prev;
    if (seg->last == x) seg->last = x->prev;
  };
  if (Block* p = v->prev;
      p != nullptr && p->state.get() == Block::State::vacant && p->end() == v->addr) {
    p->size += v->size;
    unlink(v);
    delete v;
    v = p;
  }
  if (Block* n = v->next;
      n != nullptr && n->state.get() == Block::State::vacant && v->end() == n->addr) {
    vacant.erase(n);
    v->size += n->size;
    unlink(n);
    delete n;
  }
  if (v->next == nullptr && v->end() == seg->frontier) {
    // The segment's mapped extent ends here: the frontier takes the range back.
    vacant.erase(v);
    seg->frontier = v->addr;
    unlink(v);
    delete v;
    return;
  }
  vacant.insert(v);
}

std::vector<Heap::Block*> Heap::placeholders_locked(Segment* seg) {
  // Only placeholders are left in a segment without chunks; at teardown
  // this runs before the real blocks are deleted.
  std::vector<Block*> out;
  for (Block* x = seg->last; x != nullptr; x = x->prev) {
    const Block::State st = x->state.get();
    if (st == Block::State::dead || st == Block::State::vacant) out.push_back(x);
  }
  return out;
}

void Heap::bury_placeholders_locked(Segment* seg, std::vector<Fence>& fences,
                                    std::vector<Mapping>& mappings) {
  auto& vacant = pools_[seg->pool].vacant[static_cast<int>(seg->kind)];
  for (Block* x : placeholders_locked(seg)) {
    if (auto it = dead_.find(x); it != dead_.end()) {
      fences.insert(fences.end(), it->second.fences.begin(), it->second.fences.end());
      mappings.insert(mappings.end(), it->second.aliases.begin(), it->second.aliases.end());
      dead_.erase(it);
    }
    vacant.erase(x);
    delete x;
  }
  seg->last = nullptr;
}

void Heap::retire_locked(Segment* seg, std::vector<Fence> fences, std::vector<Mapping> mappings) {
  Reclaimer& reclaimer = context_.reclaimer();
  if (!seg->chunks.empty() || is_frontier_locked(seg)) {
    if (!mappings.empty()) {
      seg->tickets.push_back(reclaimer.submit(std::move(fences), std::move(mappings)));
    }
    return;
  }
  // The segment's last chunks: its placeholders' aliases and its earlier
  // unmaps are taken back and queued with these, so the address range is
  // freed after every one of them.
  bury_placeholders_locked(seg, fences, mappings);
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

bool Heap::extendable_locked(const Block* b, Stream stream) const {
  // New memory mapped next to free block `b` merges with it if the result
  // may go to `stream`: `b` is neutral, or `stream`'s with no other users
  // (mergeable() with either kind of new block).
  if (b == nullptr || b->state.get() != Block::State::free) return false;
  return b->neutral || (b->stream == stream && b->extra.empty());
}

Heap::Block* Heap::frontier_tail_locked(Segment* seg, Stream stream) {
  Block* t = seg->last;
  return t != nullptr && t->end() == seg->frontier && extendable_locked(t, stream) ? t : nullptr;
}

Heap::Gap Heap::best_gap_locked(PoolId pool, SizeKind kind, Stream stream, std::size_t rounded) {
  Gap best;
  for (Block* v : pools_[pool].vacant[static_cast<int>(kind)]) {
    Block* p = v->prev;
    if (p == nullptr || p->end() != v->addr || !extendable_locked(p, stream)) p = nullptr;
    Block* n = v->next;
    if (n == nullptr || v->end() != n->addr || !extendable_locked(n, stream)) n = nullptr;
    const std::size_t before = p != nullptr ? p->size : 0;
    const std::size_t span = before + v->size + (n != nullptr ? n->size : 0);
    if (span < rounded || before >= rounded) continue;
    // Mapped from the front of the range; all of it if the block must
    // reach into the free block after it.
    const std::size_t need = std::min(align_up(rounded - before, granularity_), v->size);
    if (best.vacant == nullptr || need < best.need ||
        (need == best.need &&
         (span < best.span || (span == best.span && v->addr < best.vacant->addr)))) {
      best = {v, p, n, need, span};
    }
  }
  return best;
}

Heap::Block* Heap::grow_locked(PoolId pool, SizeKind kind, Stream stream, std::size_t rounded) {
  const std::size_t whole =
      kind == SizeKind::small ? granularity_ : align_up(rounded, granularity_);
  if (device_total_ != 0 && whole > device_total_) {
    throw OutOfMemoryError("the request is larger than the device's " +
                           format_bytes(device_total_));
  }
  PhysicalPool& ppool = context_.pool();
  // Unmaps whose fences are done return their chunks to the cache now, so
  // they can be stitched instead of new memory being created; aliases
  // whose fences are done leave vacant ranges to map again.
  if (context_.reclaimer().stats().pending_entries != 0) {
    try {
      context_.reclaimer().poll();
    } catch (const Error& e) {
      log(LogLevel::warn, "heap: polling the reclaimer failed: %s", e.what());
    }
  }
  reap_dead_locked();

  // Where the new memory goes. At the frontier of the (pool, kind)'s
  // growing segment, the free block ending there (the tail earlier
  // requests left) becomes the front of the new block: only the difference
  // is mapped. Or into a vacant range (chunks stitched away earlier) whose
  // free neighbours plus the range hold the request: that reuses the
  // neighbours' memory (otherwise pinned by the live blocks beyond them)
  // and the range's addresses; taken when it needs no more new memory than
  // the frontier.
  PoolState& ps = pools_[pool];
  Segment* const front = ps.frontier[static_cast<int>(kind)];
  Block* tail = front != nullptr ? frontier_tail_locked(front, stream) : nullptr;
  if (tail != nullptr && tail->size >= rounded) return tail;
  const std::size_t room = front != nullptr ? front->range.end() - front->frontier : 0;
  Gap gap = best_gap_locked(pool, kind, stream, rounded);
  const std::size_t front_need =
      tail != nullptr ? align_up(rounded - tail->size, granularity_) : whole;
  if (gap.vacant != nullptr && gap.need > front_need) gap = Gap{};

  // Candidates: whole free chunks inside segments (not those of the blocks
  // the new memory joins: they are in place already), and the pool's cache.
  struct Pick {
    std::size_t bytes;
    std::ptrdiff_t source;  // index into segment chunks, or -1 - class index (cached)
  };
  const std::vector<FreeChunk> seg_chunks = free_chunks_locked(pool, stream, true);
  const std::vector<std::size_t>& classes = ppool.chunk_classes();
  const std::vector<std::size_t> counts = ppool.cached_counts();
  auto chunk_at = [](Block* b, std::uintptr_t va) -> const Chunk& {
    const std::vector<Mapping>& chunks = b->segment->chunks;
    return std::lower_bound(chunks.begin(), chunks.end(), va,
                            [](const Mapping& m, std::uintptr_t a) { return m.va < a; })
        ->chunk;
  };

  std::map<Block*, std::vector<std::uintptr_t>> by_block;  // block -> chunk addresses
  std::map<Block*, std::vector<Fence>> fences;
  std::vector<std::size_t> sizes;  // from the cache, then new
  std::size_t fresh_count = 0;
  bool owned = false;  // some stitched memory is still ordered on `stream`
  std::size_t total = 0;
  for (;;) {
    const std::size_t need = gap.vacant != nullptr ? gap.need
                             : tail != nullptr     ? front_need
                                                   : whole;
    // A vacant range holds at most its size.
    const std::size_t cap =
        gap.vacant != nullptr ? gap.vacant->size : std::numeric_limits<std::size_t>::max();
    std::vector<Pick> candidates;
    for (std::size_t i = 0; i < seg_chunks.size(); ++i) {
      const Block* src = seg_chunks[i].block;
      if (src == tail || (gap.vacant != nullptr && (src == gap.before || src == gap.after)))
        continue;
      candidates.push_back({seg_chunks[i].bytes, static_cast<std::ptrdiff_t>(i)});
    }
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
        if (p.bytes > kMaxSmallPage || p.bytes > cap) continue;
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
          if (!taken[i] && candidates[i].bytes >= left &&
              need - left + candidates[i].bytes <= cap) {
            chosen.push_back(candidates[i]);
            left = 0;
            break;
          }
        }
      }
    }

    // Fences that guard the old addresses of the stitched chunks. A block
    // whose fences cannot be recorded keeps its chunks; new memory replaces
    // them.
    by_block.clear();
    fences.clear();
    owned = false;
    for (const Pick& p : chosen) {
      if (p.source >= 0) {
        const FreeChunk& fc = seg_chunks[static_cast<std::size_t>(p.source)];
        by_block[fc.block].push_back(fc.block->segment->chunks[fc.index].va);
      }
    }
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
    sizes.clear();
    for (const Pick& p : chosen) {
      if (p.source < 0) sizes.push_back(classes[static_cast<std::size_t>(-1 - p.source)]);
    }
    const std::vector<std::size_t> fresh = plan_new_chunks(left, rounded);
    fresh_count = fresh.size();
    sizes.insert(sizes.end(), fresh.begin(), fresh.end());
    total = 0;
    for (std::size_t s : sizes) total += s;
    for (auto& [b, idx] : by_block) {
      for (std::uintptr_t va : idx) total += chunk_at(b, va).bytes;
    }
    // Counting on the tail needs the new memory right behind it.
    if (gap.vacant != nullptr || tail == nullptr || total <= room) break;
    tail = nullptr;
  }

  std::vector<Chunk> acquired;
  if (!sizes.empty()) acquired = ppool.acquire(sizes);  // OutOfMemoryError: nothing changed
  std::vector<Chunk> layout;
  for (auto& [b, idx] : by_block) {
    for (std::uintptr_t va : idx) layout.push_back(chunk_at(b, va));
  }
  const std::size_t stitched = layout.size();
  layout.insert(layout.end(), acquired.begin(), acquired.end());

  // Into the vacant range, at the frontier if it has room, else in a new
  // growing segment.
  const bool in_gap = gap.vacant != nullptr;
  const bool at_front = !in_gap && front != nullptr && total <= room;
  VaRange fresh_range;
  if (!in_gap && !at_front) {
    try {
      fresh_range = context_.address_space().allocate(frontier_span_locked(pool, kind, total));
    } catch (...) {
      ppool.give_back(acquired);
      throw;
    }
  }
  const std::uintptr_t base = in_gap     ? gap.vacant->addr
                              : at_front ? front->frontier
                                         : fresh_range.base;
  std::vector<Mapping> maps;
  try {
    std::uintptr_t va = base;
    for (const Chunk& c : layout) {
      backend_.map(va, c.bytes, c.handle);
      maps.push_back({va, c, false});
      va += c.bytes;
    }
    backend_.set_access(base, total);
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
    if (in_gap) {
      if (!clean) {
        // Something may still be mapped there: never map there again (a
        // dead placeholder without aliases goes with its segment).
        ps.vacant[static_cast<int>(kind)].erase(gap.vacant);
        gap.vacant->state.set(Block::State::dead);
      }
    } else if (!at_front) {
      if (clean) context_.address_space().deallocate(fresh_range);
    } else if (!clean) {
      // Something may still be mapped past the frontier: never map there again.
      front->frontier = front->range.end();
    }
    throw;
  }

  // Commit: the stitched chunks leave their old segments; their old
  // addresses stay as dead placeholders until their users' fences complete
  // (then the aliases are unmapped and the ranges become vacant). The
  // segment the memory goes to may be one of them, but not the blocks it
  // joins.
  std::vector<Segment*> sources;
  for (auto& [b, idx] : by_block) {
    sources.push_back(b->segment);
    std::vector<Burial> buried;
    carve_locked(b, idx, &buried);
    for (Burial& r : buried) {
      for (Mapping& m : r.aliases) m.alias = true;
      r.fences = fences[b];
      dead_.emplace(r.placeholder, std::move(r));
    }
  }
  Segment* seg = in_gap ? gap.vacant->segment : front;
  if (!in_gap && !at_front) {
    seg = new Segment();
    seg->range = fresh_range;
    seg->kind = kind;
    seg->pool = pool;
    segments_.insert(seg);
  }
  events::record_map(context_.device(), maps);
  seg->chunks.insert(std::lower_bound(seg->chunks.begin(), seg->chunks.end(), base,
                                      [](const Mapping& m, std::uintptr_t a) { return m.va < a; }),
                     maps.begin(), maps.end());
  if (!in_gap) seg->frontier = base + total;
  for (const Chunk& c : acquired) mapped_bytes_ += c.bytes;
  if (stitched != 0 || acquired.size() != fresh_count) ++stitches_;

  auto* nb = new Block();
  nb->addr = base;
  nb->size = total;
  nb->segment = seg;
  nb->pool = pool;
  nb->state.set(Block::State::free);
  nb->neutral = !owned;
  nb->stream = stream;
  nb->epoch = use_.now();
  if (in_gap) {
    // The vacant range shrinks from its front (or goes).
    Block* v = gap.vacant;
    nb->prev = v->prev;
    nb->next = v;
    if (v->prev != nullptr) v->prev->next = nb;
    v->prev = nb;
    v->addr += total;
    v->size -= total;
    if (v->size == 0) {
      ps.vacant[static_cast<int>(kind)].erase(v);
      nb->next = v->next;
      if (v->next != nullptr) v->next->prev = nb;
      if (seg->last == v) seg->last = nb;
      delete v;
    }
  } else {
    nb->prev = seg->last;
    if (seg->last != nullptr) seg->last->next = nb;
    seg->last = nb;
  }
  map_insert(nb);
  // The new memory joins the free blocks around it (they may go to
  // `stream`; the merged block keeps the constraints of all).
  Block* before = in_gap ? gap.before : tail;
  if (before != nullptr && before->next == nb && before->end() == nb->addr) {
    index_erase_locked(before);
    merge_next_locked(before);
    nb = before;
  }
  if (in_gap && gap.after != nullptr && nb->next == gap.after && nb->end() == gap.after->addr) {
    index_erase_locked(gap.after);
    merge_next_locked(nb);
  }
  index_insert_locked(nb);
  // Segments the stitch emptied go now (the frontier only when replaced).
  if (!in_gap && !at_front && fresh_range.bytes > total) {
    Segment* const old = ps.frontier[static_cast<int>(kind)];
    ps.frontier[static_cast<int>(kind)] = seg;
    if (old != nullptr) sources.push_back(old);
  }
  std::sort(sources.begin(), sources.end());
  sources.erase(std::unique(sources.begin(), sources.end()), sources.end());
  for (Segment* s : sources) {
    if (s != seg && s->chunks.empty()) retire_locked(s, {}, {});
  }
  note_reserved_locked();
  return nb;
}

std::size_t Heap::frontier_span_locked(PoolId pool, SizeKind kind, std::size_t bytes) {
  // VA is nearly free, so a growing segment reserves room for later growth:
  // twice the last one's, from kMinFrontierSpan up to one address-space
  // reservation (graph pools and small pages rarely need much); the general
  // pool's large blocks start at a fraction of a reservation
  // (kLargeSpanDivisor).
  std::size_t& last = pools_[pool].frontier_span[static_cast<int>(kind)];
  const std::size_t limit = context_.address_space().reservation_size();
  std::size_t first = kMinFrontierSpan;
  if (pool == 0 && kind == SizeKind::large) {
    first = std::max(first, align_up(limit / kLargeSpanDivisor, granularity_));
  }
  std::size_t span = last == 0 ? first : 2 * last;
  span = std::min(span, limit);
  span = std::max(span, align_up(bytes, granularity_));
  last = span;
  return span;
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
    StreamUse::Round round(use_);  // one completion query per stream
    flush_cache_locked();
    refresh_locked();
    released = release_free_chunks_locked(false, std::numeric_limits<std::size_t>::max());
    reap_dead_locked();
  }
  return released + context_.pool().trim(0);
}

std::size_t Heap::free_held_locked() const {
  const std::size_t allocated = allocated_.load(std::memory_order_relaxed);
  const std::size_t free_mapped = mapped_bytes_ > allocated ? mapped_bytes_ - allocated : 0;
  return free_mapped + context_.pool().stats().cached_bytes;
}

std::size_t Heap::recent_demand() {
  // The peak since the last tick goes into the current slice; a new slice
  // starts every kDemandBucketTicks ticks.
  constexpr auto kDemandBucketTicks =
      static_cast<std::uint32_t>(kDemandWindow / kTrimInterval / kDemandBuckets);
  const std::uint32_t tick = trim_tick_.fetch_add(1, std::memory_order_relaxed) + 1;
  const std::size_t now_allocated = allocated_.load(std::memory_order_relaxed);
  const std::size_t peak =
      std::max(demand_peak_.exchange(now_allocated, std::memory_order_relaxed), now_allocated);
  std::lock_guard lock(demand_mutex_);
  if (tick % kDemandBucketTicks == 0) {
    demand_slot_ = (demand_slot_ + 1) % kDemandBuckets;
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
    const std::size_t allocated = allocated_.load(std::memory_order_relaxed);
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
  if (now - *over_limit_since_ < kTrimDelay) return 0;
  // Only idle memory goes: thread-cache lists left unused for kTrimDelay
  // join the free index; lists in steady reuse stay cached (and mapped).
  flush_idle_caches_locked(kIdleTicks);
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
  use_.forget();  // time passed: ask the driver afresh
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
  msg += ". vmmalloc holds " + format_bytes(held) + ": " + format_bytes(allocated) + " in use, " +
         format_bytes(cached) + " cached, " + format_bytes(pending) +
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

bool Heap::is_frontier_locked(const Segment* seg) const {
  auto it = pools_.find(seg->pool);
  return it != pools_.end() && it->second.frontier[static_cast<int>(seg->kind)] == seg;
}

void Heap::migrate_pool_locked(PoolId pool) {
  auto it = pools_.find(pool);
  if (it == pools_.end()) return;
  // Its growing segments become ordinary ones of the general pool; one that
  // was kept only as a frontier (no chunks left) goes now.
  const std::array<Segment*, kSizeKinds> fronts = it->second.frontier;
  it->second.frontier.fill(nullptr);
  for (Segment* f : fronts) {
    if (f != nullptr && f->chunks.empty()) retire_locked(f, {}, {});
  }
  for (int k = 0; k < kSizeKinds; ++k) {
    pools_[0].vacant[k].insert(it->second.vacant[k].begin(), it->second.vacant[k].end());
    it->second.vacant[k].clear();
  }
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
  // Shards first, caches second: a free counted here had its allocation
  // counted before it (in the same shard, or as a cache hit read below).
  for (PtrShard& sh : ptrs_) {
    std::lock_guard lock(sh.mutex);
    s.allocations += sh.allocations;
    s.frees += sh.frees;
  }
  {
    std::lock_guard caches_lock(caches_mutex_);
    s.allocations += detached_hits_;
    for (const std::shared_ptr<ThreadCache>& tc : caches_) {
      std::lock_guard lock(tc->lock);
      s.allocations += tc->hits;
    }
  }
  s.active_blocks = s.allocations > s.frees ? static_cast<std::size_t>(s.allocations - s.frees) : 0;
  std::size_t peak_reserved = 0;
  {
    std::lock_guard lock(mutex_);
    s.mapped_bytes = mapped_bytes_;
    s.stitches = stitches_;
    s.ooms = ooms_;
    s.fenced_free_waits = fenced_free_waits_;
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
