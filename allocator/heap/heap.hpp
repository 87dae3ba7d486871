// Heap: the engine behind vmm::Allocator (include/vmmalloc/allocator.hpp).
//
// Memory is held in segments: a VA range with physical chunks mapped behind
// part of it. Blocks tile the mapped parts of a segment (address order,
// 512-byte granules); free blocks are coalesced with free neighbours and
// indexed by (graph pool, small/large, stream) in size order for best fit.
// Small requests are rounded to size classes and packed into 2 MiB pages of
// small segments; large ones are rounded to 512 bytes and served from large
// segments.
//
// Growth: when no free block fits, grow_locked() maps memory at the
// *frontier* of the (pool, size kind)'s growing segment, a segment whose
// address range has room reserved past its mapped end. The free block ending there (what
// earlier requests left of their last chunk) becomes the front of the new
// block, so only the difference is mapped and no segment keeps an unusable
// tail. The memory is found by *stitching* first: whole free chunks from
// anywhere (inside other free blocks, or the pool's cache) are mapped at the
// frontier; only what they cannot cover is created. A stitched chunk stays
// mapped at its old address too (an alias; the old range is a *dead*
// placeholder) until the fences of the old address's users complete; a
// later growth or empty_cache() then unmaps the alias and the range becomes
// *vacant*, to be mapped again. So reuse on the same stream never waits.
//
// Hot path: every thread has its own cache per heap (ThreadCache,
// thread_cache.hpp). A free
// of a plain block (no extra stream, no graph pool) pushes it on the
// freeing thread's per-(stream, size) LIFO; an allocation of that size on
// that stream pops it. Neither makes a driver call or takes the heap mutex:
// one pointer-shard lock (the free's lookup) and the thread's own cache
// lock, which other threads take only to flush it. A miss takes the heap
// mutex, folds the thread's cache into the free index (coalescing) and
// searches; if nothing fits, every thread's cache is folded in before any
// memory is mapped. A block freed on another thread than it was allocated
// on goes to the freeing thread's cache. When a thread exits its caches go
// back to their heaps; empty_cache(), release_stream() and an explicit
// trim_to_limit() fold every cache in; the background trim folds in only
// lists left unused for kTrimDelay, so memory in steady reuse is never
// unmapped and re-created.
//
// Stream-ordered reuse: see stream_use.hpp (lazy fences, capture).
//
// Files: block.hpp (Block, Segment, the placeholders' states),
// free_index.hpp (best fit per pool, size kind and stream),
// thread_cache.hpp (thread caches and the live heaps exiting threads hand
// them back to), tuning.hpp (chunk sizes, spans, trim timing); Heap's
// members are in heap.cpp (entry points, hot path, free blocks),
// heap_growth.cpp (grow_locked and its steps), heap_carve.cpp (carving
// chunks out, placeholders, retiring segments), heap_trim.cpp (trim, the
// fenced-free wait, OOM recovery and message), heap_pools.cpp (graph
// pools), heap_snapshot.cpp (stats, describe).
//
// Locks, outermost first: LiveHeaps' (thread exit) -> mutex_ (free index,
// segments, placeholders, pools, StreamUse, counters of mapped memory) ->
// ThreadCaches' mutex (the list of thread caches) -> a thread cache's
// lock -> a pointer shard -> the reclaimer's/pool's/address space's own
// locks; demand_mutex_ is a leaf. Hot paths hold one lock at a time, never
// mutex_. Block fields: a live block's are guarded by its pointer shard
// (`state` and `requested` are atomics: the thread that pops a cached
// block sets them before handing the block out); a cached block belongs to
// its thread cache; a free (indexed) block and a placeholder to mutex_.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "allocator/base/spin_lock.hpp"
#include "allocator/heap/block.hpp"
#include "allocator/heap/free_index.hpp"
#include "allocator/heap/size_classes.hpp"
#include "allocator/heap/stream_use.hpp"
#include "allocator/heap/thread_cache.hpp"
#include "allocator/heap/tuning.hpp"
#include "allocator/record/snapshot_views.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/vm/transfer.hpp"
#include "vmmalloc/pool_checkpoint.hpp"
#include "vmmalloc/stats.hpp"
#include "vmmalloc/tags.hpp"

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
  // The reclaimer's periodic task: unmaps free memory above what the recent
  // peak of allocated bytes (kDemandWindow in tuning.hpp) may want again plus
  // the cache limit, once it has stayed above that for a while (kTrimDelay).
  std::size_t background_trim();

  PoolId create_pool();
  void begin_pool(PoolId pool, Stream stream);
  void end_pool(PoolId pool);
  void release_pool(PoolId pool);
  // Options of a live graph pool (contract at Allocator::set_pool_use_on_oom).
  void set_pool_use_on_oom(PoolId pool, bool on);
  void set_pool_no_split(PoolId pool);
  // Checkpoints (heap_checkpoint.cpp; contract at Allocator::checkpoint_pool).
  PoolCheckpoint checkpoint_pool(PoolId pool) const;
  CheckpointDelta restore_pool(const PoolCheckpoint& checkpoint);
  std::vector<void*> pool_live_blocks(PoolId pool) const;

  // Sleep and wake (heap_sleep.cpp, docs/sleep.md). A tag's memory is its
  // own pool (made on the first allocation under the tag) plus the graph
  // pools tagged with it. sleep() waits for the work queued on the streams
  // that used that memory, copies live blocks to pinned host memory
  // (offload), then unmaps and releases every chunk of the pools; the
  // address ranges and blocks stay. wake() maps new chunks at the same
  // addresses and copies the bytes back. Tags already asleep (awake) are
  // skipped. On a throw nothing changed for the tag that failed (tags
  // before it in the list stay done). Allocating under a sleeping tag
  // throws InvalidArgumentError; frees and record_stream work as usual.
  SleepReport sleep(std::span<const TagId> tags, SleepMode mode);
  SleepReport wake(std::span<const TagId> tags, bool keep_host);
  bool asleep(TagId tag) const;
  // Tags graph pool `pool` (0 untags it): sleep(tag) then includes it.
  void tag_pool(PoolId pool, TagId tag);

  AllocatorStats stats() const;
  // The heap's state for snapshots (heap_snapshot.cpp): counters, segments
  // with their chunks and, if `with_blocks`, every block. Takes the heap
  // mutex and each pointer shard in turn; never calls the driver.
  HeapView describe(bool with_blocks) const;
  void reset_peak_stats();
  std::size_t block_size(const void* ptr) const;
  // True if `ptr` is the start of a live block of this heap.
  bool owns(const void* ptr) const;
  DeviceContext& context() const noexcept { return context_; }

 private:
  using Block = heap::Block;
  using Segment = heap::Segment;
  using FreeIndex = heap::FreeIndex;
  using ThreadCache = heap::ThreadCache;
  struct PoolState {
    std::array<FreeIndex, kSizeKinds> index;
    // Per size kind: the segment new memory is mapped at the end of (its
    // free tail merges with it), and the address span it was given.
    std::array<Segment*, kSizeKinds> growing{};
    std::array<std::size_t, kSizeKinds> growing_span{};
    std::array<std::unordered_set<Block*>, kSizeKinds> vacant;  // vacant placeholders
    std::size_t live = 0;
    bool released = false;
    TagId tag = 0;       // sleep(tag) includes this pool
    bool graph = true;   // a graph pool (create_pool); false: a tag's own pool
    bool asleep = false; // its segments' chunks are unmapped and released
    bool use_on_oom = false;  // lends its free blocks when nothing may be mapped
    bool no_split = false;    // hands its free blocks out whole
  };
  // A sleeping tag: its pools' live bytes in host memory (offload) and
  // where each run goes back. Kept host buffers of awake tags too.
  struct TagSleep {
    bool asleep = false;
    SleepMode mode = SleepMode::offload;
    std::vector<CopyRun> runs;
    PinnedBuffer host;  // offload: runs' bytes; kept after wake if asked
  };
  static constexpr std::size_t kPtrShards = 64;
  struct alignas(64) PtrShard {
    mutable SpinLock mutex;
    std::unordered_map<std::uintptr_t, Block*> blocks;  // every block, by address
    std::uint64_t allocations = 0;  // made on the slow path (cache hits: ThreadCache)
    std::uint64_t frees = 0;
  };
  // A dead placeholder: the aliases still mapped at its old address and
  // the fences of the users of that address; unmapped once they complete.
  struct PendingAliases {
    Block* placeholder = nullptr;
    std::vector<Mapping> aliases;
    std::vector<Fence> fences;
  };
  // A whole chunk inside a free block: a candidate for stitching or unmapping.
  struct FreeChunk {
    Block* block = nullptr;
    std::size_t index = 0;  // into block->segment->chunks
    std::size_t bytes = 0;
  };

  PtrShard& ptr_shard(std::uintptr_t addr) const;

  // Hot path pieces.
  void activate(Block* b, std::size_t requested);  // ptr shard + counters
  // The calling thread's usage counts (usage_counters.hpp), or nullptr
  // while it is exiting (then counted in the shared totals).
  heap::UsageCounters::Local* usage_local();
  // Every usage figure now: published plus every cache's counts, per size
  // kind and summed (of[kAll]); clamped at 0 while other threads count.
  heap::UsageCounters::Usage usage_now() const;
  // Bytes allocated now, of every kind (from usage_now()).
  std::size_t allocated_now() const;
  // A thread exits: its cache's blocks go to the free index. LiveHeaps' lock held.
  void adopt_cache(ThreadCache& tc);

  void* allocate_slow(std::size_t bytes, std::size_t rounded, Stream stream);

  // Everything below: mutex_ held.

  // Free blocks (heap.cpp): the free index, coalescing, best fit.
  PoolId pool_for_locked(Stream stream) const;
  FreeIndex& index_locked(PoolId pool, SizeKind kind);
  // Folds thread caches into the free index: every cache; one; or, in every
  // cache, the lists not used for `idle_ticks` trim ticks.
  // `detach`: at teardown, the caches are handed back for good.
  void flush_cache_locked(bool detach = false);
  void flush_thread_cache_locked(ThreadCache& tc);
  // Returns the blocks folded in.
  std::size_t flush_idle_caches_locked(std::uint32_t idle_ticks);
  void fold_cached_locked(const std::vector<Block*>& blocks);
  // Blocks whose users' work is all done become neutral and coalesce.
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
  // Hands out free block `b` (split to `rounded`) for `bytes` on `stream`.
  // `found`: a free block found for the request (a no-split pool's is
  // handed out whole); otherwise cut to `rounded`.
  void* take_locked(Block* b, std::size_t rounded, std::size_t bytes, Stream stream,
                    bool found = false);
  // A free block of a use-on-OOM pool that fits, for an allocation outside
  // any pool that found no memory; nullptr if none.
  Block* lend_for_oom_locked(SizeKind kind, Stream stream, std::size_t rounded);
  // Cuts [addr + keep, end) off free block `b` (not in the free index) as a
  // new free block in the pointer map and the index; returns it.
  Block* split_locked(Block* b, std::size_t keep);
  // The merged block carries the constraints of both.
  static void absorb(Block* dst, const Block* src);
  // dst takes in its (adjacent) next block, which is deleted.
  void merge_next_locked(Block* dst);
  // Requests (records if none is outstanding) the fences that tell when the
  // users of free block `b` other than `stream` are done with it.
  void request_fences_locked(const Block* b, Stream stream);

  // Growth (heap_growth.cpp): a free block of at least `rounded` bytes for
  // `stream` made of new memory (stitched or created) and the free blocks
  // it joins. OutOfMemoryError if none can be made (nothing changed).
  Block* grow_locked(PoolId pool, SizeKind kind, Stream stream, std::size_t rounded);
  // A vacant range to map `need` bytes at the front of, so that with the
  // free blocks around it (nullptr: none that may join) it holds a request.
  struct VacancyFit {
    Block* vacant = nullptr;
    Block* before = nullptr;
    Block* after = nullptr;
    std::size_t need = 0;
    std::size_t span = 0;
  };
  struct Growth;
  // A candidate chunk for growth: a whole free chunk of a segment, or one
  // of the pool's cached chunks.
  struct ChunkPick {
    std::size_t bytes;
    std::ptrdiff_t source;  // index into the free chunks, or -1 - class index (cached)
  };
  // grow_locked's steps, in order.
  void settle_unmaps_locked();
  Block* place_growth_locked(Growth& g);
  void plan_stitch_locked(Growth& g);
  static std::vector<ChunkPick> stitch_candidates(const Growth& g,
                                                  const std::vector<std::size_t>& classes,
                                                  std::size_t need);
  // Which candidates (sorted here) to take for `need` bytes (at most
  // `cap`); `left`: the bytes they do not cover.
  static std::vector<ChunkPick> choose_chunks(SizeKind kind, std::vector<ChunkPick>& candidates,
                                              std::size_t need, std::size_t cap, std::size_t& left);
  std::size_t fence_stitch_locked(Growth& g, const std::vector<ChunkPick>& chosen,
                                  std::size_t left);
  void map_growth_locked(Growth& g);
  void undo_growth_locked(Growth& g, bool clean);
  Block* commit_growth_locked(Growth& g);
  std::vector<Segment*> detach_stitched_locked(Growth& g);
  Segment* receive_growth_locked(Growth& g);
  Block* link_growth_block_locked(Growth& g, Segment* seg);
  // Whether memory mapped next to `b` may merge with it and go to `stream`.
  bool extendable_locked(const Block* b, Stream stream) const;
  // The free block at the end of growing segment `seg` that new memory
  // mapped behind it may merge with and go to `stream`, or nullptr.
  Block* frontier_tail_locked(Segment* seg, Stream stream);
  // The vacancy needing the least new mapping (then the tightest), or none.
  VacancyFit best_vacancy_locked(PoolId pool, SizeKind kind, Stream stream, std::size_t rounded);
  // The address span of a new growing segment that must hold `bytes`.
  std::size_t growing_span_locked(PoolId pool, SizeKind kind, std::size_t bytes);
  bool is_growing_locked(const Segment* seg) const;
  // Chunk sizes (largest first) for `bytes` of new memory for a request of
  // `request` bytes.
  // `regrowth`: the request extends a free tail at the frontier (tuning.hpp:
  // kRegrowthMinRequest), so the largest classes are used.
  std::vector<std::size_t> plan_new_chunks(std::size_t bytes, std::size_t request,
                                           bool regrowth) const;
  void note_reserved_locked();

  // Carving chunks out of free blocks and the placeholders left behind
  // (heap_carve.cpp).
  std::vector<FreeChunk> free_chunks_locked(PoolId pool, Stream stream, bool for_stitch);
  // Fences guarding the old address of `b`'s memory; false if some user is
  // capturing (the memory cannot be unmapped yet).
  bool unmap_fences_locked(Block* b, std::vector<Fence>& fences);
  // Cuts the chosen chunks (their addresses, ascending, each a whole chunk
  // of b's segment inside b) out of free block `b`; returns their mappings.
  // The rest of `b` stays free. With `dead`, each run of carved chunks is
  // left as a dead placeholder, appended there with its mappings (the
  // caller adds the fences and registers it in pending_aliases_).
  std::vector<Mapping> carve_locked(Block* b, const std::vector<std::uintptr_t>& chunk_vas,
                                    std::vector<PendingAliases>* dead = nullptr);
  // Dead placeholders whose fences completed: their aliases are unmapped
  // and the ranges become vacant.
  void unmap_finished_aliases_locked();
  // `v` (its range unmapped) becomes vacant: merged with vacant neighbours,
  // or given back to the frontier at the end of the mapped extent.
  void make_vacant_locked(Block* v);
  std::vector<Block*> placeholders_locked(Segment* seg);
  // Deletes seg's placeholders, handing dead ones' fences and aliases over.
  void drop_placeholders_locked(Segment* seg, std::vector<Fence>& fences,
                                std::vector<Mapping>& mappings);
  // Hands detached mappings of `seg` to the reclaimer; frees the segment
  // when it has no chunks left.
  void retire_locked(Segment* seg, std::vector<Fence> fences, std::vector<Mapping> mappings);

  // Trim and memory pressure (heap_trim.cpp).
  std::size_t release_free_chunks_locked(bool complete_only, std::size_t budget);
  // Free memory held: mapped but not allocated (free and cached blocks),
  // plus the pool's cache.
  std::size_t free_held_locked() const;
  // One background-trim tick: the peak of allocated bytes over the last
  // kDemandWindow (this tick's included).
  std::size_t recent_demand();
  void reclaim_for_oom_locked(Stream stream);
  // Free memory of `pool` that no stream may take yet: blocks whose other
  // users' (Block::extra) work is not known to be done.
  struct FencedFree {
    std::size_t bytes = 0;
    const Block* oldest = nullptr;  // lowest epoch
    const Block* newest = nullptr;
  };
  FencedFree fenced_free_locked(PoolId pool);
  // While fenced free memory is above Config::fenced_free_limit, waits for
  // the users of its oldest block (`lock` released meanwhile) and looks for a
  // fit again; nullptr once at or under the limit, or if the oldest block's
  // fences were not recorded before this call (waiting for a fence recorded
  // now would drain the GPU's queue), or if no wait is possible: the caller
  // maps new memory. Records the fences a later wait needs in any case.
  // `entry_epoch`: StreamUse::now() when the allocation took the lock.
  Block* wait_for_fenced_free_locked(std::unique_lock<std::mutex>& lock, PoolId pool, SizeKind kind,
                                     Stream stream, std::size_t rounded, std::uint64_t entry_epoch);
  std::string oom_message_locked(std::size_t bytes, std::size_t rounded, PoolId pool,
                                 const std::string& cause);
  // The largest request that would fit in `pool` now.
  std::size_t largest_fit_locked(PoolId pool, const Reclaimer::Accounting& a,
                                 const DeviceMemoryInfo& info);

  // Graph pools (heap_pools.cpp).
  void migrate_pool_locked(PoolId pool);
  // The pool an allocation on `stream` by this thread goes to: the capture's
  // graph pool, else the thread's tag's pool (made now), else 0. Throws
  // InvalidArgumentError if that pool is asleep.
  PoolId allocation_pool_locked(Stream stream);

  // Sleep and wake (heap_sleep.cpp).
  std::vector<PoolId> tag_pools_locked(TagId tag) const;
  // The segments of `pools`, by address.
  std::vector<Segment*> tag_segments_locked(const std::vector<PoolId>& pools) const;
  bool asleep_locked(TagId tag) const;
  void sleep_tag_locked(TagId tag, SleepMode mode, SleepReport& report);
  void wake_tag_locked(TagId tag, bool keep_host, SleepReport& report);
  // Waits for the users of the pools' memory and unmaps the aliases
  // (stitched chunks' old addresses) of their chunks.
  // Throws InvalidArgumentError if a user stream is capturing, DriverError
  // if a wait fails (nothing changed either way).
  void settle_pools_locked(const std::vector<Segment*>& segs);
  std::vector<CopyRun> live_runs_locked(const std::vector<Segment*>& segs) const;
  // At teardown: sleeping segments have nothing mapped; host copies go.
  void drop_sleep_state_locked();

  // Checkpoints (heap_checkpoint.cpp).
  void check_checkpointable_locked(PoolId pool, const char* what) const;
  std::vector<Block*> pool_live_locked(PoolId pool) const;
  // Frees live block `b` of a graph pool as deallocate would.
  void free_live_locked(Block* b);
  // The free block of `pool` that covers [addr, addr + size), merging free
  // neighbours that are done with their streams' work; nullptr if none.
  Block* free_cover_locked(PoolId pool, std::uintptr_t addr, std::size_t size);
  // Makes checkpoint block `lb` live at its address (restore_pool's step 2).
  void carve_at_locked(PoolId pool, const PoolCheckpoint::LiveBlock& lb);

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
  std::uint64_t alloc_retries_ = 0;  // growths tried again after reclaim_for_oom_locked
  std::uint64_t fenced_free_waits_ = 0;
  std::size_t peak_reserved_ = 0;
  std::uint64_t completion_sum_ = 0;  // refresh_locked's last look at the streams' completion
  std::unordered_map<Block*, PendingAliases> pending_aliases_;  // by dead placeholder
  std::unordered_map<TagId, PoolId> tag_pools_;  // each tag's own pool
  std::unordered_map<TagId, TagSleep> sleeping_;
  std::optional<std::chrono::steady_clock::time_point> over_limit_since_;

  // Every thread's cache of this heap, and the background trim's clock
  // (one tick per run, kTrimInterval).
  heap::ThreadCaches caches_;
  // Demand: the peak of allocated bytes since the last trim tick, and the
  // peaks of the window's slices (demand_mutex_, a leaf lock).
  std::mutex demand_mutex_;
  std::array<std::size_t, heap::kDemandBuckets> demand_buckets_{};
  std::size_t demand_slot_ = 0;

  mutable std::array<PtrShard, kPtrShards> ptrs_;

  // Bytes allocated and requested and blocks, per size kind, with their
  // peaks and running totals (usage_counters.hpp).
  heap::UsageCounters usage_;

  Reclaimer::TaskId trim_task_ = 0;
};

}  // namespace vmm
