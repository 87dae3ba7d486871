// Heap::stats and Heap::describe: the heap's counters, and its segments,
// chunks and blocks for snapshots (see allocator/record/snapshot_views.hpp).
// Reads the heap's internals under its own locks, in its lock order: the
// pointer shards and the thread caches for the counts (stats), the heap
// mutex (segments, free index, pools), then one pointer shard at a time
// (every block is in one, and a block's fields are stable under its
// shard's lock). Never calls the driver; the allocation hot path only
// meets it as a shard or cache lock held for one copy.
#include <algorithm>
#include <unordered_map>

#include "allocator/heap/heap.hpp"

namespace vmm {

namespace {

using Counters = heap::UsageCounters;

// One quantity's figures: current, peak, allocated so far, freed so far.
struct Figure {
  std::size_t current = 0;
  std::size_t peak = 0;
  std::uint64_t total = 0;
  std::uint64_t freed = 0;
};

Figure figure(const Counters::Usage& usage, const Counters::Peaks& peaks, int kind, int quantity) {
  const Counters::Figures& f = usage.of[kind];
  Figure out;
  out.current = static_cast<std::size_t>(f.current[quantity]);  // >= 0 (usage_now)
  // A peak is never below the present (with several threads the counted
  // peak may lag the sum: usage_counters.hpp).
  out.peak = std::max(static_cast<std::size_t>(peaks.of[kind][quantity]), out.current);
  out.total = f.total[quantity];
  out.freed = out.total > out.current ? out.total - out.current : 0;
  return out;
}

void put(const Figure& f, std::size_t& current, std::size_t& peak, std::uint64_t& total,
         std::uint64_t& freed) {
  current = f.current;
  peak = f.peak;
  total = f.total;
  freed = f.freed;
}

// The usage counters' figures: all, small and large bytes, requested bytes
// and blocks. The counts of all blocks (active_blocks, allocations, frees)
// come from the shards and caches instead (Heap::stats).
void fill_usage(AllocatorStats& s, const Counters::Usage& u, const Counters::Peaks& p) {
  constexpr int kAll = Counters::kAll;
  constexpr auto kSmall = static_cast<int>(SizeKind::small);
  constexpr auto kLarge = static_cast<int>(SizeKind::large);
  put(figure(u, p, kAll, Counters::kBytes), s.allocated_bytes, s.peak_allocated_bytes,
      s.total_allocated_bytes, s.total_freed_bytes);
  put(figure(u, p, kAll, Counters::kRequested), s.requested_bytes, s.peak_requested_bytes,
      s.total_requested_bytes, s.total_freed_requested_bytes);
  s.peak_active_blocks = figure(u, p, kAll, Counters::kBlocks).peak;
  put(figure(u, p, kSmall, Counters::kBytes), s.small_allocated_bytes, s.peak_small_allocated_bytes,
      s.small_total_allocated_bytes, s.small_total_freed_bytes);
  put(figure(u, p, kSmall, Counters::kRequested), s.small_requested_bytes,
      s.peak_small_requested_bytes, s.small_total_requested_bytes,
      s.small_total_freed_requested_bytes);
  put(figure(u, p, kSmall, Counters::kBlocks), s.small_active_blocks, s.peak_small_active_blocks,
      s.small_allocations, s.small_frees);
  put(figure(u, p, kLarge, Counters::kBytes), s.large_allocated_bytes, s.peak_large_allocated_bytes,
      s.large_total_allocated_bytes, s.large_total_freed_bytes);
  put(figure(u, p, kLarge, Counters::kRequested), s.large_requested_bytes,
      s.peak_large_requested_bytes, s.large_total_requested_bytes,
      s.large_total_freed_requested_bytes);
  put(figure(u, p, kLarge, Counters::kBlocks), s.large_active_blocks, s.peak_large_active_blocks,
      s.large_allocations, s.large_frees);
}

}  // namespace

AllocatorStats Heap::stats() const {
  AllocatorStats s;
  fill_usage(s, usage_now(), usage_.peaks());
  // Shards first, caches second: a free counted here had its allocation
  // counted before it (in the same shard, or as a cache hit read below).
  for (PtrShard& sh : ptrs_) {
    std::lock_guard lock(sh.mutex);
    s.allocations += sh.allocations;
    s.frees += sh.frees;
  }
  s.allocations += caches_.hits();
  s.active_blocks = s.allocations > s.frees ? static_cast<std::size_t>(s.allocations - s.frees) : 0;
  s.peak_active_blocks = std::max(s.peak_active_blocks, s.active_blocks);
  std::size_t peak_reserved = 0;
  {
    std::lock_guard lock(mutex_);
    s.mapped_bytes = mapped_bytes_;
    s.stitches = stitches_;
    s.ooms = ooms_;
    s.alloc_retries = alloc_retries_;
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
  usage_.reset_peaks(usage_now());
  std::lock_guard lock(mutex_);
  const Reclaimer::Accounting a = context_.reclaimer().accounting();
  peak_reserved_ = mapped_bytes_ + a.pool.cached_bytes + a.reclaimer.pending_bytes;
}

HeapView Heap::describe(bool with_blocks) const {
  HeapView out;
  out.stats = stats();  // takes mutex_ itself
  out.device_total_bytes = device_total_;

  std::lock_guard lock(mutex_);
  out.fences_recorded = use_.fences_recorded();
  out.capturing_streams = capturing_into_.size();
  for (const auto& [id, pool] : pools_) {
    if (id != 0 && !pool.released && pool.graph) out.graph_pools.push_back(id);
  }
  std::sort(out.graph_pools.begin(), out.graph_pools.end());

  std::vector<const Segment*> segments(segments_.begin(), segments_.end());
  std::sort(segments.begin(), segments.end(),
            [](const Segment* a, const Segment* b) { return a->range.base < b->range.base; });
  std::unordered_map<const Segment*, std::size_t> index;
  out.segments.reserve(segments.size());
  for (const Segment* seg : segments) {
    SegmentView v;
    v.range = seg->range;
    v.small = seg->kind == SizeKind::small;
    v.pool = seg->pool;
    v.pending_unmaps = seg->tickets.size();
    v.asleep = seg->asleep;
    if (auto p = pools_.find(seg->pool); p != pools_.end() && p->second.tag != 0) {
      v.tag = tag_name(p->second.tag);
    }
    v.chunks.reserve(seg->chunks.size());
    for (const Mapping& m : seg->chunks) v.chunks.push_back({m.va, m.chunk.bytes, m.alias});
    index.emplace(seg, out.segments.size());
    out.segments.push_back(std::move(v));
  }
  if (!with_blocks) return out;

  for (const PtrShard& sh : ptrs_) {
    std::lock_guard shard_lock(sh.mutex);
    for (const auto& [addr, b] : sh.blocks) {
      auto it = index.find(b->segment);
      if (it == index.end()) continue;  // cannot happen: every block has a live segment
      BlockView v;
      v.addr = b->addr;
      v.size = b->size;
      const Block::State state = b->state.get();
      v.state = state == Block::State::live     ? BlockView::State::live
                : state == Block::State::cached ? BlockView::State::cached
                                                : BlockView::State::free;
      v.requested = state == Block::State::live ? b->requested.get() : 0;
      v.stream = reinterpret_cast<std::uintptr_t>(b->stream);
      v.other_streams = b->extra.size();
      v.neutral = b->neutral;
      v.pool = b->pool;
      out.segments[it->second].blocks.push_back(v);
    }
  }
  for (SegmentView& v : out.segments) {
    std::sort(v.blocks.begin(), v.blocks.end(),
              [](const BlockView& a, const BlockView& b) { return a.addr < b.addr; });
  }
  return out;
}

}  // namespace vmm
