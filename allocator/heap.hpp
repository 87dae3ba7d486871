// Heap: the engine behind vmm::Allocator (include/vmmalloc/allocator.hpp).
//
// Memory is held in segments: a VA range with physical chunks mapped behind
// it. Blocks tile the mapped parts of a segment (address order, 512-byte
// granules); free blocks are coalesced with free neighbours and indexed by
// (graph pool, small/large, stream) in size order for best fit. Small
// requests are rounded to size classes and served from segments of one 2 MiB
// page; large ones to 512 bytes from large segments. When no free block fits,
// grow() builds a new segment by *stitching*: whole free chunks from
// anywhere (inside other segments' free blocks, or the pool's cache) are
// mapped behind a fresh VA range; only what they cannot cover is created.
// A stitched chunk stays mapped at its old address too (an alias) until the
// fences of the old address's users complete; the reclaimer then unmaps the
// alias. So reuse on the same stream never waits.
//
// Hot path: a free pushes the block onto a per-(stream, size) LIFO in a
// sharded cache; an allocation of that size on that stream pops it. Neither
// makes a driver call or takes the heap mutex. Blocks of graph pools and
// blocks with record_stream users bypass the cache. A miss takes the heap
// mutex, folds the cache into the free index (coalescing) and searches.
//
// Stream-ordered reuse: see stream_use.hpp (lazy fences, capture).
//
// Locks, outermost first: mutex_ (free index, segments, pools, StreamUse)
// -> a cache shard -> a pointer shard -> the reclaimer's/pool's/address
// space's own locks. Hot paths hold one shard lock at a time, never mutex_.
// Block fields: a live block's are guarded by its pointer shard; a cached
// block belongs to its cache shard; a free (indexed) block to mutex_.
#pragma once

#include <array>
#include <chrono>
#include <optional>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "allocator/device_context.hpp"
#include "allocator/size_classes.hpp"
#include "allocator/stream_use.hpp"
#include "vmmalloc/allocator.hpp"

namespace vmm {

class Heap {
 public:
  explicit Heap(DeviceContext& context);
  // Frees everything (see Allocator::~Allocator). Never throws.
  ~Heap();
  Heap(const Heap&) = delete;
  Heap& operator=(const Heap&) = delete;

  void* allocate(std::size_t bytes, Stream stream);
  // `own_order`: free in the block's own stream order (stream ignored).
  void deallocate(void* ptr, Stream stream, bool own_order);
  void record_stream(void* ptr, Stream stream);
  void release_stream(Stream stream);
  std::size_t empty_cache();
  // What the reclaimer's background task does: unmaps free chunks whose
  // fences are complete while free memory (mapped free + pool cache) is above
  // the pool's cache limit. Returns the bytes handed to the reclaimer.
  std::size_t trim_to_limit();
  // The reclaimer's periodic task: trim_to_limit() once free memory has
  // stayed above the limit for a while (see kTrimDelay in heap.cpp).
  std::size_t background_trim();

  PoolId create_pool();
  void begin_pool(PoolId pool, Stream stream);
  void end_pool(PoolId pool);
  void release_pool(PoolId pool);

  AllocatorStats stats() const;
  void reset_peak_stats();
  std::size_t block_size(const void* ptr) const;
  // True if `ptr` is the start of a live block of this heap.
  bool owns(const void* ptr) const;
  DeviceContext& context() const noexcept { return context_; }

 private:
  struct Segment;
  struct Block {
    std::uintptr_t addr = 0;
    std::size_t size = 0;
    std::size_t requested = 0;
    Segment* segment = nullptr;
    Block* prev = nullptr;  // address order within the segment (may be
    Block* next = nullptr;  // non-adjacent across unmapped holes)
    Stream stream = nullptr;     // owner: allocated on / freed in its order
    std::vector<Stream> extra;   // other users (record_stream, cross-stream free)
    std::uint64_t epoch = 0;     // StreamUse epoch of the free
    PoolId pool = 0;
    enum class State : std::uint8_t { live, cached, free };
    // Atomic only because the heap mutex's holder reads a neighbour's state
    // (to coalesce) while a hot-path free may be turning it live -> cached;
    // either value means "not free", which is all the reader needs.
    struct AtomicState {
      std::atomic<State> v{State::free};
      AtomicState() = default;
      AtomicState(const AtomicState& o) : v(o.get()) {}
      AtomicState& operator=(const AtomicState& o) {
        set(o.get());
        return *this;
      }
      State get() const noexcept { return v.load(std::memory_order_relaxed); }
      void set(State s) noexcept { v.store(s, std::memory_order_relaxed); }
    } state;
    bool neutral = false;  // free, every user's work done: usable by any stream
    std::uintptr_t end() const noexcept { return addr + size; }
  };
  struct BySize {
    bool operator()(const Block* a, const Block* b) const noexcept {
      return a->size != b->size ? a->size < b->size : a->addr < b->addr;
    }
  };
  using SizeSet = std::set<Block*, BySize>;
  struct FreeIndex {
    std::map<Stream, SizeSet> by_stream;  // kNeutral: usable by any stream
  };
  struct Segment {
    VaRange range;
    SizeKind kind = SizeKind::large;
    PoolId pool = 0;
    std::vector<Mapping> chunks;             // mapped, sorted by va
    std::vector<Reclaimer::Ticket> tickets;  // unmaps of chunks detached from it
  };
  struct PoolState {
    std::array<FreeIndex, kSizeKinds> index;
    std::size_t live = 0;
    bool released = false;
  };
  struct CacheKey {
    Stream stream;
    std::size_t size;
    bool operator==(const CacheKey&) const = default;
  };
  struct CacheKeyHash {
    std::size_t operator()(const CacheKey& k) const noexcept {
      return std::hash<std::uintptr_t>()(reinterpret_cast<std::uintptr_t>(k.stream) * 31 + k.size);
    }
  };
  static constexpr std::size_t kCacheShards = 16;
  static constexpr std::size_t kPtrShards = 64;
  struct alignas(64) CacheShard {
    std::mutex mutex;
    std::unordered_map<CacheKey, std::vector<Block*>, CacheKeyHash> lists;
    std::size_t blocks = 0;
  };
  struct alignas(64) PtrShard {
    mutable std::mutex mutex;
    std::unordered_map<std::uintptr_t, Block*> blocks;  // every block, by address
    std::size_t active = 0;
    std::uint64_t allocations = 0;
    std::uint64_t frees = 0;
  };
  // A whole chunk inside a free block: a candidate for stitching or unmapping.
  struct FreeChunk {
    Block* block = nullptr;
    std::size_t index = 0;  // into block->segment->chunks
    std::size_t bytes = 0;
  };

  static CacheShard& cache_shard_of(std::array<CacheShard, kCacheShards>& shards, Stream s,
                                    std::size_t size);
  PtrShard& ptr_shard(std::uintptr_t addr) const;

  // Hot path pieces.
  Block* cache_pop(Stream stream, std::size_t size);
  void cache_push(Block* b);
  void activate(Block* b, std::size_t requested);  // ptr shard + counters
  void count_alloc(std::size_t size, std::size_t requested);

  void* allocate_slow(std::size_t bytes, std::size_t rounded, Stream stream);

  // Everything below: mutex_ held.
  PoolId pool_for_locked(Stream stream) const;
  FreeIndex& index_locked(PoolId pool, SizeKind kind);
  void flush_cache_locked();
  void refresh_locked();
  void index_insert_locked(Block* b);
  void index_erase_locked(Block* b);
  void map_insert(Block* b);
  void map_erase(Block* b);
  // Frees `b` into the index, coalescing with compatible free neighbours;
  // neighbours merged away (deleted) are appended to `deleted` if given.
  void free_locked(Block* b, std::vector<Block*>* deleted = nullptr);
  bool mergeable(const Block* a, const Block* b) const;
  bool usable_locked(Block* b, Stream stream);
  Block* find_fit_locked(PoolId pool, SizeKind kind, Stream stream, std::size_t size);
  void* take_locked(Block* b, std::size_t rounded, std::size_t bytes, Stream stream);
  Block* grow_locked(PoolId pool, SizeKind kind, Stream stream, std::size_t rounded);
  std::vector<FreeChunk> free_chunks_locked(PoolId pool, Stream stream, bool for_stitch);
  // Fences guarding the old address of `b`'s memory; false if some user is
  // capturing (the memory cannot be unmapped yet).
  bool unmap_fences_locked(Block* b, std::vector<Fence>& fences);
  // Cuts the chosen chunks (their addresses, ascending, each a whole chunk
  // of b's segment inside b) out of free block `b`; returns their mappings.
  // The rest of `b` stays free.
  std::vector<Mapping> carve_locked(Block* b, const std::vector<std::uintptr_t>& chunk_vas);
  // Hands detached mappings of `seg` to the reclaimer; frees the segment
  // when it has no chunks left.
  void retire_locked(Segment* seg, std::vector<Fence> fences, std::vector<Mapping> mappings);
  std::size_t release_free_chunks_locked(bool complete_only, std::size_t budget);
  void reclaim_for_oom_locked(Stream stream);
  std::string oom_message_locked(std::size_t bytes, std::size_t rounded, PoolId pool,
                                 const std::string& cause);
  void migrate_pool_locked(PoolId pool);
  void note_reserved_locked();
  std::vector<std::size_t> plan_new_chunks(std::size_t bytes) const;

  DeviceContext& context_;
  Backend& backend_;
  const std::size_t granularity_;
  std::size_t device_total_ = 0;

  mutable std::mutex mutex_;
  StreamUse use_;
  std::unordered_set<Segment*> segments_;
  std::unordered_map<PoolId, PoolState> pools_;
  std::vector<std::pair<Stream, PoolId>> capturing_into_;  // begin_pool streams
  PoolId next_pool_ = 1;
  std::atomic<std::size_t> active_pools_{0};
  std::size_t mapped_bytes_ = 0;  // unique chunks mapped in segments
  std::uint64_t stitches_ = 0;
  std::uint64_t ooms_ = 0;
  std::size_t peak_reserved_ = 0;
  std::uint64_t frontier_sum_ = 0;  // refresh_locked's last look
  std::optional<std::chrono::steady_clock::time_point> over_limit_since_;

  mutable std::array<CacheShard, kCacheShards> cache_;
  mutable std::array<PtrShard, kPtrShards> ptrs_;

  alignas(64) std::atomic<std::size_t> allocated_{0};
  std::atomic<std::size_t> requested_{0};
  std::atomic<std::size_t> peak_allocated_{0};
  std::atomic<std::size_t> peak_requested_{0};

  Reclaimer::TaskId trim_task_ = 0;
};

}  // namespace vmm
