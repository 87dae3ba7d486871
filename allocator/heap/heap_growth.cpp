// Heap growth: when no free block fits, a free block of the request's size
// is made of new memory and the free blocks it joins (see heap.hpp:
// frontier, stitching, vacancies). grow_locked's steps, in order:
//   settle_unmaps_locked      finished unmaps and aliases come back first;
//   place_growth_locked       where: the growing segment's frontier (after
//                             its free tail) or a vacant range;
//   plan_stitch_locked        what: whole free chunks (stitched), cached and
//                             new chunks, and the fences of the stitched ones;
//   map_growth_locked         acquires the chunks and maps them (map_chunks),
//                             undoing everything on failure;
//   commit_growth_locked      carves the stitched chunks out (dead
//                             placeholders), links the new block and merges.
// Everything here runs with the heap mutex held; it calls the pool, the
// address space and the backend, and takes pointer shards inside.
#include <algorithm>
#include <bit>
#include <limits>
#include <map>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "allocator/heap/heap.hpp"
#include "allocator/record/event_ring.hpp"
#include "allocator/vm/chunk_mapper.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

// What one growth decides, step by step (see grow_locked).
struct Heap::Growth {
  Growth(PoolId p, SizeKind k, Stream s, std::size_t r) : pool(p), kind(k), stream(s), rounded(r) {}
  const PoolId pool;
  const SizeKind kind;
  const Stream stream;
  const std::size_t rounded;
  std::size_t whole = 0;  // new memory for the request alone
  // Where: at the frontier of the growing segment `front` (joining its free
  // tail, if any; `room`: unmapped VA left there), or into a vacancy.
  Segment* front = nullptr;
  Block* tail = nullptr;
  std::size_t room = 0;
  std::size_t front_need = 0;  // new memory needed at the frontier
  VacancyFit vacancy;
  // What: whole free chunks of other blocks (addresses ascending, by block)
  // with the fences guarding their old addresses, then chunk sizes from
  // the pool's cache and new ones (`fresh_count` of them). `free` and
  // `counts`: the candidates (the free chunks, the pool's cached chunks
  // per class). Keyed by Block*, not by address: carving a block moves its
  // address while the maps are in use, which would break an order by it.
  std::vector<FreeChunk> free;
  std::vector<std::size_t> counts;
  std::map<Block*, std::vector<std::uintptr_t>> by_block;
  std::map<Block*, std::vector<Fence>> fences;
  std::vector<std::size_t> sizes;
  std::size_t fresh_count = 0;
  bool owned = false;  // some stitched memory is still ordered on `stream`
  std::size_t total = 0;
  // The mapping: chunks acquired from the pool, where they went.
  std::vector<Chunk> acquired;
  std::vector<Chunk> layout;  // stitched chunks, then acquired ones
  std::size_t stitched = 0;   // chunks moved from free blocks
  bool in_vacancy = false;
  bool at_front = false;
  VaRange fresh_range;  // a new growing segment's, if neither
  std::uintptr_t base = 0;
  std::vector<Mapping> maps;
};

namespace {

const Chunk& chunk_at(const heap::Block* b, std::uintptr_t va) {
  const std::vector<Mapping>& chunks = b->segment->chunks;
  return std::lower_bound(chunks.begin(), chunks.end(), va,
                          [](const Mapping& m, std::uintptr_t a) { return m.va < a; })
      ->chunk;
}

}  // namespace

Heap::Block* Heap::grow_locked(PoolId pool, SizeKind kind, Stream stream, std::size_t rounded) {
  Growth g(pool, kind, stream, rounded);
  g.whole = kind == SizeKind::small ? granularity_ : align_up(rounded, granularity_);
  if (device_total_ != 0 && g.whole > device_total_) {
    throw OutOfMemoryError("the request is larger than the device's " +
                           format_bytes(device_total_));
  }
  settle_unmaps_locked();
  if (Block* tail = place_growth_locked(g)) return tail;
  plan_stitch_locked(g);
  map_growth_locked(g);  // OutOfMemoryError and the backend's: nothing changed
  return commit_growth_locked(g);
}

void Heap::settle_unmaps_locked() {
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
  unmap_finished_aliases_locked();
}

Heap::Block* Heap::place_growth_locked(Growth& g) {
  // At the frontier of the (pool, kind)'s growing segment, the free block
  // ending there (the tail earlier requests left) becomes the front of the
  // new block: only the difference is mapped. Or into a vacant range
  // (chunks stitched away earlier) whose free neighbours plus the range
  // hold the request: that reuses the neighbours' memory (otherwise pinned
  // by the live blocks beyond them) and the range's addresses; taken when
  // it needs no more new memory than the frontier.
  g.front = pools_[g.pool].growing[static_cast<int>(g.kind)];
  g.tail = g.front != nullptr ? frontier_tail_locked(g.front, g.stream) : nullptr;
  if (g.tail != nullptr && g.tail->size >= g.rounded) return g.tail;  // nothing to map
  g.room = g.front != nullptr ? g.front->range.end() - g.front->frontier : 0;
  g.vacancy = best_vacancy_locked(g.pool, g.kind, g.stream, g.rounded);
  g.front_need = g.tail != nullptr ? align_up(g.rounded - g.tail->size, granularity_) : g.whole;
  if (g.vacancy.vacant != nullptr && g.vacancy.need > g.front_need) g.vacancy = VacancyFit{};
  return nullptr;
}

void Heap::plan_stitch_locked(Growth& g) {
  PhysicalPool& ppool = context_.pool();
  g.free = free_chunks_locked(g.pool, g.stream, true);
  const std::vector<std::size_t>& classes = ppool.chunk_classes();
  g.counts = ppool.cached_counts();
  for (;;) {
    const std::size_t need = g.vacancy.vacant != nullptr ? g.vacancy.need
                             : g.tail != nullptr         ? g.front_need
                                                         : g.whole;
    // A vacant range holds at most its size.
    const std::size_t cap = g.vacancy.vacant != nullptr ? g.vacancy.vacant->size
                                                        : std::numeric_limits<std::size_t>::max();
    std::vector<ChunkPick> candidates = stitch_candidates(g, classes, need);
    std::size_t left = need;
    const std::vector<ChunkPick> chosen = choose_chunks(g.kind, candidates, need, cap, left);
    left = fence_stitch_locked(g, chosen, left);
    g.sizes.clear();
    for (const ChunkPick& p : chosen) {
      if (p.source < 0) g.sizes.push_back(classes[static_cast<std::size_t>(-1 - p.source)]);
    }
    const bool regrowth = g.vacancy.vacant == nullptr && g.tail != nullptr &&
                          g.rounded >= heap::kRegrowthMinRequest &&
                          g.tail->size * heap::kRegrowthTailShare >= g.rounded;
    const std::vector<std::size_t> fresh = plan_new_chunks(left, g.rounded, regrowth);
    g.fresh_count = fresh.size();
    g.sizes.insert(g.sizes.end(), fresh.begin(), fresh.end());
    g.total = 0;
    for (std::size_t s : g.sizes) g.total += s;
    for (auto& [b, idx] : g.by_block) {
      for (std::uintptr_t va : idx) g.total += chunk_at(b, va).bytes;
    }
    // Counting on the tail needs the new memory right behind it.
    if (g.vacancy.vacant != nullptr || g.tail == nullptr || g.total <= g.room) return;
    g.tail = nullptr;
  }
}

std::vector<Heap::ChunkPick> Heap::stitch_candidates(const Growth& g,
                                                     const std::vector<std::size_t>& classes,
                                                     std::size_t need) {
  const std::vector<FreeChunk>& free = g.free;
  const std::vector<std::size_t>& counts = g.counts;
  // Whole free chunks inside segments (not those of the blocks the new
  // memory joins: they are in place already), and the pool's cache.
  std::vector<ChunkPick> candidates;
  for (std::size_t i = 0; i < free.size(); ++i) {
    const Block* src = free[i].block;
    if (src == g.tail ||
        (g.vacancy.vacant != nullptr && (src == g.vacancy.before || src == g.vacancy.after)))
      continue;
    candidates.push_back({free[i].bytes, static_cast<std::ptrdiff_t>(i)});
  }
  for (std::size_t c = 0; c < classes.size() && c < counts.size(); ++c) {
    const std::size_t useful = std::min(counts[c], need / classes[c] + 1);
    for (std::size_t k = 0; k < useful; ++k) {
      candidates.push_back({classes[c], -1 - static_cast<std::ptrdiff_t>(c)});
    }
  }
  return candidates;
}

std::vector<Heap::ChunkPick> Heap::choose_chunks(SizeKind kind, std::vector<ChunkPick>& candidates,
                                                 std::size_t need, std::size_t cap,
                                                 std::size_t& left) {
  std::vector<ChunkPick> chosen;
  left = need;
  if (kind == SizeKind::small) {
    // One page: the smallest candidate.
    const ChunkPick* best = nullptr;
    for (const ChunkPick& p : candidates) {
      if (p.bytes > heap::kMaxSmallPage || p.bytes > cap) continue;
      if (best == nullptr || p.bytes < best->bytes) best = &p;
    }
    if (best != nullptr) {
      chosen.push_back(*best);
      left = 0;
    }
    return chosen;
  }
  // Largest first while they fit, then the smallest that covers the rest.
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const ChunkPick& a, const ChunkPick& b) { return a.bytes > b.bytes; });
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
      if (!taken[i] && candidates[i].bytes >= left && need - left + candidates[i].bytes <= cap) {
        chosen.push_back(candidates[i]);
        left = 0;
        break;
      }
    }
  }
  return chosen;
}

std::size_t Heap::fence_stitch_locked(Growth& g, const std::vector<ChunkPick>& chosen,
                                      std::size_t left) {
  // Fences that guard the old addresses of the stitched chunks. A block
  // whose fences cannot be recorded keeps its chunks; new memory replaces
  // them (returned: what is left to cover).
  g.by_block.clear();
  g.fences.clear();
  g.owned = false;
  for (const ChunkPick& p : chosen) {
    if (p.source >= 0) {
      const FreeChunk& fc = g.free[static_cast<std::size_t>(p.source)];
      g.by_block[fc.block].push_back(fc.block->segment->chunks[fc.index].va);
    }
  }
  for (auto it = g.by_block.begin(); it != g.by_block.end();) {
    std::vector<Fence> f;
    if (!unmap_fences_locked(it->first, f)) {
      for (std::uintptr_t va : it->second) left += chunk_at(it->first, va).bytes;
      it = g.by_block.erase(it);
      continue;
    }
    if (!it->first->neutral) g.owned = true;
    std::sort(it->second.begin(), it->second.end());
    g.fences[it->first] = std::move(f);
    ++it;
  }
  return left;
}

void Heap::map_growth_locked(Growth& g) {
  PhysicalPool& ppool = context_.pool();
  if (!g.sizes.empty()) g.acquired = ppool.acquire(g.sizes);  // OutOfMemoryError: nothing changed
  for (auto& [b, idx] : g.by_block) {
    for (std::uintptr_t va : idx) g.layout.push_back(chunk_at(b, va));
  }
  g.stitched = g.layout.size();
  g.layout.insert(g.layout.end(), g.acquired.begin(), g.acquired.end());

  // Into the vacant range, at the frontier if it has room, else in a new
  // growing segment.
  g.in_vacancy = g.vacancy.vacant != nullptr;
  g.at_front = !g.in_vacancy && g.front != nullptr && g.total <= g.room;
  if (!g.in_vacancy && !g.at_front) {
    try {
      g.fresh_range =
          context_.address_space().allocate(growing_span_locked(g.pool, g.kind, g.total));
    } catch (...) {
      ppool.give_back(g.acquired);
      throw;
    }
  }
  g.base = g.in_vacancy ? g.vacancy.vacant->addr
           : g.at_front ? g.front->frontier
                        : g.fresh_range.base;
  std::uintptr_t va = g.base;
  for (const Chunk& c : g.layout) {
    g.maps.push_back({va, c, false});
    va += c.bytes;
  }
  std::vector<std::size_t> still_mapped;
  try {
    map_chunks(backend_, g.maps, "heap grow", &still_mapped);
  } catch (...) {
    undo_growth_locked(g, still_mapped.empty());
    throw;
  }
}

void Heap::undo_growth_locked(Growth& g, bool clean) {
  // map_chunks unmapped what it mapped; `clean`: every such unmap worked.
  context_.pool().give_back(g.acquired);
  if (g.in_vacancy) {
    if (!clean) {
      // Something may still be mapped there: never map there again (a
      // dead placeholder without aliases goes with its segment).
      pools_[g.pool].vacant[static_cast<int>(g.kind)].erase(g.vacancy.vacant);
      g.vacancy.vacant->state.set(Block::State::dead);
    }
  } else if (!g.at_front) {
    if (clean) context_.address_space().deallocate(g.fresh_range);
  } else if (!clean) {
    // Something may still be mapped past the frontier: never map there again.
    g.front->frontier = g.front->range.end();
  }
}

Heap::Block* Heap::commit_growth_locked(Growth& g) {
  std::vector<Segment*> sources = detach_stitched_locked(g);
  Segment* seg = receive_growth_locked(g);
  Block* nb = link_growth_block_locked(g, seg);
  // Segments the stitch emptied go now (the growing one only when replaced).
  if (!g.in_vacancy && !g.at_front && g.fresh_range.bytes > g.total) {
    Segment*& growing = pools_[g.pool].growing[static_cast<int>(g.kind)];
    Segment* const old = growing;
    growing = seg;
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

std::vector<Heap::Segment*> Heap::detach_stitched_locked(Growth& g) {
  // The stitched chunks leave their old segments; their old addresses stay
  // as dead placeholders until their users' fences complete (then the
  // aliases are unmapped and the ranges become vacant). The segment the
  // memory goes to may be one of them, but not the blocks it joins.
  std::vector<Segment*> sources;
  for (auto& [b, idx] : g.by_block) {
    sources.push_back(b->segment);
    // Taken before carving, which may change or delete `b`; every stitched
    // block has its entry (fence_stitch_locked).
    const std::vector<Fence> fences = g.fences.at(b);
    std::vector<PendingAliases> dead;
    carve_locked(b, idx, &dead);
    for (PendingAliases& r : dead) {
      for (Mapping& m : r.aliases) m.alias = true;
      r.fences = fences;
      pending_aliases_.emplace(r.placeholder, std::move(r));
    }
  }
  return sources;
}

Heap::Segment* Heap::receive_growth_locked(Growth& g) {
  // The segment the new mappings join (a new growing one if neither the
  // vacancy's nor the frontier's), and the counters.
  Segment* seg = g.in_vacancy ? g.vacancy.vacant->segment : g.front;
  if (!g.in_vacancy && !g.at_front) {
    seg = new Segment();
    seg->range = g.fresh_range;
    seg->kind = g.kind;
    seg->pool = g.pool;
    segments_.insert(seg);
  }
  events::record_map(context_.device(), g.maps);
  seg->chunks.insert(std::lower_bound(seg->chunks.begin(), seg->chunks.end(), g.base,
                                      [](const Mapping& m, std::uintptr_t a) { return m.va < a; }),
                     g.maps.begin(), g.maps.end());
  if (!g.in_vacancy) seg->frontier = g.base + g.total;
  for (const Chunk& c : g.acquired) mapped_bytes_ += c.bytes;
  if (g.stitched != 0 || g.acquired.size() != g.fresh_count) ++stitches_;
  return seg;
}

Heap::Block* Heap::link_growth_block_locked(Growth& g, Segment* seg) {
  auto* nb = new Block();
  nb->addr = g.base;
  nb->size = g.total;
  nb->segment = seg;
  nb->pool = g.pool;
  nb->state.set(Block::State::free);
  nb->neutral = !g.owned;
  nb->stream = g.stream;
  nb->epoch = use_.now();
  if (g.in_vacancy) {
    // The vacant range shrinks from its front (or goes).
    Block* v = g.vacancy.vacant;
    nb->prev = v->prev;
    nb->next = v;
    if (v->prev != nullptr) v->prev->next = nb;
    v->prev = nb;
    v->addr += g.total;
    v->size -= g.total;
    if (v->size == 0) {
      pools_[g.pool].vacant[static_cast<int>(g.kind)].erase(v);
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
  Block* before = g.in_vacancy ? g.vacancy.before : g.tail;
  if (before != nullptr && before->next == nb && before->end() == nb->addr) {
    index_erase_locked(before);
    merge_next_locked(before);
    nb = before;
  }
  Block* after = g.in_vacancy ? g.vacancy.after : nullptr;
  if (after != nullptr && nb->next == after && nb->end() == after->addr) {
    index_erase_locked(after);
    merge_next_locked(nb);
  }
  index_insert_locked(nb);
  return nb;
}

std::vector<std::size_t> Heap::plan_new_chunks(std::size_t bytes, std::size_t request,
                                               bool regrowth) const {
  std::vector<std::size_t> sizes;
  std::size_t left = align_up(bytes, granularity_);
  const std::vector<std::size_t>& classes = context_.pool().chunk_classes();
  const std::size_t largest =
      regrowth ? classes.back()
               : std::min(heap::kMaxNewChunk, std::bit_floor(request / heap::kChunksPerRequest));
  for (auto it = classes.rbegin(); it != classes.rend() && left > 0; ++it) {
    if (*it > largest && *it != classes.front()) continue;
    while (left >= *it) {
      sizes.push_back(*it);
      left -= *it;
    }
  }
  return sizes;
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

Heap::VacancyFit Heap::best_vacancy_locked(PoolId pool, SizeKind kind, Stream stream,
                                           std::size_t rounded) {
  VacancyFit best;
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

std::size_t Heap::growing_span_locked(PoolId pool, SizeKind kind, std::size_t bytes) {
  // VA is nearly free, so a growing segment reserves room for later growth:
  // twice the last one's, from kMinFrontierSpan up to one address-space
  // reservation (graph pools and small pages rarely need much); the general
  // pool's large blocks start at a fraction of a reservation
  // (kLargeSpanDivisor).
  std::size_t& last = pools_[pool].growing_span[static_cast<int>(kind)];
  const std::size_t limit = context_.address_space().reservation_size();
  std::size_t first = heap::kMinFrontierSpan;
  if (pool == 0 && kind == SizeKind::large) {
    first = std::max(first, align_up(limit / heap::kLargeSpanDivisor, granularity_));
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

}  // namespace vmm
