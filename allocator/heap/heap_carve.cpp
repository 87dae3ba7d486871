// Heap: carving whole chunks out of free blocks (to stitch them elsewhere
// or unmap them) and the placeholders they leave. A carved run whose old
// address may still be in use stays as a dead placeholder with its aliases
// (PendingAliases) until its users' fences complete; then the aliases are
// unmapped and the range becomes vacant, to be mapped again by growth.
// Segments that lose their last chunk are retired (their unmaps and
// address range handed to the reclaimer). Everything here runs with the
// heap mutex held; it takes pointer shards (map_insert/map_erase) inside.
#include <algorithm>
#include <optional>

#include "allocator/base/log.hpp"
#include "allocator/heap/heap.hpp"
#include "allocator/record/event_ring.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

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
      idx.for_each_block([&](Block* b) {
        if (b->size < granularity_) return;
        if (for_stitch && !usable_locked(b, stream)) return;
        if (!b->neutral) {
          // A user without a fence yet that cannot get one (capturing or
          // released stream) keeps the memory mapped where it is.
          bool blocked = !use_.done(b->stream, b->epoch) && capturing(b->stream);
          for (Stream x : b->extra) blocked = blocked || (!use_.done(x, b->epoch) && capturing(x));
          if (blocked) return;
        }
        const std::vector<Mapping>& chunks = b->segment->chunks;
        auto it = std::lower_bound(chunks.begin(), chunks.end(), b->addr,
                                   [](const Mapping& m, std::uintptr_t a) { return m.va < a; });
        for (; it != chunks.end() && it->end() <= b->end(); ++it) {
          out.push_back({b, static_cast<std::size_t>(it - chunks.begin()), it->chunk.bytes});
        }
      });
    }
  }
  return out;
}

std::vector<Mapping> Heap::carve_locked(Block* b, const std::vector<std::uintptr_t>& chunk_vas,
                                        std::vector<PendingAliases>* dead) {
  Segment* seg = b->segment;
  index_erase_locked(b);
  map_erase(b);
  std::vector<Mapping> out;
  // What b becomes, in address order: free pieces, and (if `dead`) the
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
    if (dead != nullptr) {
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
      dead->push_back({nb, std::move(p.mappings), {}});
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

void Heap::unmap_finished_aliases_locked() {
  for (auto it = pending_aliases_.begin(); it != pending_aliases_.end();) {
    PendingAliases& r = it->second;
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
    it = pending_aliases_.erase(it);
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

void Heap::drop_placeholders_locked(Segment* seg, std::vector<Fence>& fences,
                                    std::vector<Mapping>& mappings) {
  auto& vacant = pools_[seg->pool].vacant[static_cast<int>(seg->kind)];
  for (Block* x : placeholders_locked(seg)) {
    if (auto it = pending_aliases_.find(x); it != pending_aliases_.end()) {
      fences.insert(fences.end(), it->second.fences.begin(), it->second.fences.end());
      mappings.insert(mappings.end(), it->second.aliases.begin(), it->second.aliases.end());
      pending_aliases_.erase(it);
    }
    vacant.erase(x);
    delete x;
  }
  seg->last = nullptr;
}

void Heap::retire_locked(Segment* seg, std::vector<Fence> fences, std::vector<Mapping> mappings) {
  Reclaimer& reclaimer = context_.reclaimer();
  if (!seg->chunks.empty() || is_growing_locked(seg)) {
    if (!mappings.empty()) {
      seg->tickets.push_back(reclaimer.submit(std::move(fences), std::move(mappings)));
    }
    return;
  }
  // The segment's last chunks: its placeholders' aliases and its earlier
  // unmaps are taken back and queued with these, so the address range is
  // freed after every one of them.
  drop_placeholders_locked(seg, fences, mappings);
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

}  // namespace vmm
