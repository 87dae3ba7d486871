// Heap: sleep and wake of tagged memory (docs/sleep.md).
//
// A tag's memory is the pools carrying the tag: its own pool (made by the
// first allocation under the tag) and graph pools captured under it or
// tagged with tag_pool(). Sleep keeps every segment, block and address of
// those pools and takes only the physical memory away:
//   1. settle: wait for a fence on every stream that used the pools' blocks
//      (live or free) and unmap the aliases of their chunks (the old
//      addresses of stitched chunks), so no one else maps them;
//   2. offload: copy the live blocks (adjacent ones merged into runs) to one
//      pinned host buffer (vm/transfer.hpp); discard copies nothing;
//   3. unmap every chunk of the pools' segments and release it to the device
//      (not to the pool's cache): the memory is free for anyone.
// Wake acquires chunks of the same sizes, maps them at the same addresses and
// copies the runs back. A failure at any step undoes that tag's steps, so the
// tag stays as it was: awake with its memory intact, or asleep with its host
// copy intact. Everything here runs with the heap mutex held (other threads'
// slow paths wait; their cache hits do not).
#include <algorithm>
#include <string>
#include <unordered_set>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "allocator/heap/heap.hpp"
#include "allocator/record/event_ring.hpp"
#include "allocator/vm/chunk_mapper.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

std::vector<PoolId> Heap::tag_pools_locked(TagId tag) const {
  std::vector<PoolId> out;
  for (const auto& [id, ps] : pools_) {
    if (id != 0 && ps.tag == tag) out.push_back(id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void Heap::tag_pool(PoolId pool, TagId tag) {
  if (tag != 0) tag_name(tag);  // throws for an id never made
  std::lock_guard lock(mutex_);
  auto it = pools_.find(pool);
  if (pool == 0 || it == pools_.end() || !it->second.graph || it->second.released) {
    throw InvalidArgumentError("tag_pool: " + std::to_string(pool) + " is not a live graph pool");
  }
  if (it->second.asleep || (tag != 0 && asleep_locked(tag)) ||
      (it->second.tag != 0 && asleep_locked(it->second.tag))) {
    throw InvalidArgumentError("tag_pool: pool " + std::to_string(pool) +
                               " or the tag is asleep (wake it first)");
  }
  it->second.tag = tag;
}

bool Heap::asleep(TagId tag) const {
  std::lock_guard lock(mutex_);
  return asleep_locked(tag);
}

bool Heap::asleep_locked(TagId tag) const {
  auto it = sleeping_.find(tag);
  return it != sleeping_.end() && it->second.asleep;
}

SleepReport Heap::sleep(std::span<const TagId> tags, SleepMode mode) {
  for (TagId t : tags) {
    if (t == 0) throw InvalidArgumentError("sleep: tag 0 (untagged memory) cannot sleep");
  }
  SleepReport report;
  std::lock_guard lock(mutex_);
  StreamUse::Round round(use_);
  for (TagId t : tags) {
    if (!asleep_locked(t)) sleep_tag_locked(t, mode, report);
  }
  return report;
}

SleepReport Heap::wake(std::span<const TagId> tags, bool keep_host) {
  SleepReport report;
  std::lock_guard lock(mutex_);
  for (TagId t : tags) {
    if (asleep_locked(t)) {
      wake_tag_locked(t, keep_host, report);
    } else if (!keep_host) {
      // Awake: a host buffer kept by an earlier wake goes now.
      auto it = sleeping_.find(t);
      if (it != sleeping_.end()) sleeping_.erase(it);
    }
  }
  return report;
}

std::vector<Heap::Segment*> Heap::tag_segments_locked(const std::vector<PoolId>& pools) const {
  std::vector<Segment*> out;
  for (Segment* seg : segments_) {
    if (std::find(pools.begin(), pools.end(), seg->pool) != pools.end()) out.push_back(seg);
  }
  std::sort(out.begin(), out.end(),
            [](const Segment* a, const Segment* b) { return a->range.base < b->range.base; });
  return out;
}

void Heap::settle_pools_locked(const std::vector<Segment*>& segs) {
  std::unordered_set<Stream> users;
  std::unordered_set<std::uint64_t> handles;
  for (Segment* seg : segs) {
    for (const Mapping& m : seg->chunks) handles.insert(m.chunk.handle.value);
    for (Block* b = seg->last; b != nullptr; b = b->prev) {
      const Block::State st = b->state.get();
      if (st == Block::State::dead || st == Block::State::vacant) continue;
      if (st == Block::State::free && b->neutral) continue;
      users.insert(b->stream);
      users.insert(b->extra.begin(), b->extra.end());
    }
  }
  std::vector<Fence> fences;
  for (Stream s : users) {
    std::optional<Fence> f = use_.fence_for(s, use_.now());
    if (!f) {
      throw InvalidArgumentError(
          "sleep: a stream that used the memory is being captured into a CUDA graph "
          "(end the capture first)");
    }
    if (*f) fences.push_back(std::move(*f));
  }
  // Aliases: a dead placeholder in these segments, or an old address of one
  // of their chunks elsewhere.
  for (const auto& [placeholder, r] : pending_aliases_) {
    bool ours = std::find(segs.begin(), segs.end(), placeholder->segment) != segs.end();
    for (const Mapping& m : r.aliases) ours = ours || handles.count(m.chunk.handle.value) != 0;
    if (ours) fences.insert(fences.end(), r.fences.begin(), r.fences.end());
  }
  for (const Fence& f : fences) f.wait();  // DriverError: nothing changed yet
  use_.forget();
  unmap_finished_aliases_locked();
}

std::vector<CopyRun> Heap::live_runs_locked(const std::vector<Segment*>& segs) const {
  std::vector<CopyRun> runs;
  std::size_t offset = 0;
  for (const Segment* seg : segs) {
    std::vector<const Block*> live;
    for (const Block* b = seg->last; b != nullptr; b = b->prev) {
      if (b->state.get() == Block::State::live) live.push_back(b);
    }
    std::sort(live.begin(), live.end(),
              [](const Block* a, const Block* b) { return a->addr < b->addr; });
    for (const Block* b : live) {
      if (!runs.empty() && runs.back().device + runs.back().bytes == b->addr) {
        runs.back().bytes += b->size;
      } else {
        runs.push_back({b->addr, b->size, offset});
      }
      offset += b->size;
    }
  }
  return runs;
}

void Heap::sleep_tag_locked(TagId tag, SleepMode mode, SleepReport& report) {
  const std::vector<PoolId> pools = tag_pools_locked(tag);
  for (const auto& [s, p] : capturing_into_) {
    if (std::find(pools.begin(), pools.end(), p) != pools.end()) {
      throw InvalidArgumentError("sleep: tag '" + tag_name(tag) +
                                 "': a CUDA graph is being captured into its memory");
    }
  }
  const std::vector<Segment*> segs = tag_segments_locked(pools);
  settle_pools_locked(segs);
  std::vector<CopyRun> runs = live_runs_locked(segs);
  std::size_t live = 0;
  for (const CopyRun& r : runs) live += r.bytes;
  TagSleep& ts = sleeping_[tag];
  report.live_bytes += live;
  if (mode == SleepMode::offload && live != 0) {
    if (ts.host.size() < live) {
      ts.host.reset();
      ts.host = PinnedBuffer(backend_, live);  // throws: nothing changed
      report.pinned_bytes += live;
    }
    try {
      copy_runs(backend_, runs, ts.host.data(), CopyDirection::to_host, report);
    } catch (...) {
      ts.host.reset();
      throw;
    }
  } else {
    runs.clear();
    ts.host.reset();
  }
  // Unmap everything, then release: a failed unmap maps back what was
  // unmapped (the handles are still held), so the tag stays awake.
  std::vector<Mapping> all;
  for (Segment* seg : segs) all.insert(all.end(), seg->chunks.begin(), seg->chunks.end());
  std::size_t done = 0;
  try {
    for (; done < all.size(); ++done) backend_.unmap(all[done].va, all[done].chunk.bytes);
  } catch (...) {
    try {
      map_chunks(backend_, std::span<const Mapping>(all.data(), done), "sleep (undo)");
    } catch (const Error& e) {
      log(LogLevel::error, "sleep: mapping back after a failed unmap failed: %s", e.what());
    }
    ts.host.reset();
    throw;
  }
  std::vector<Chunk> chunks;
  std::size_t bytes = 0;
  for (const Mapping& m : all) {
    chunks.push_back(m.chunk);
    bytes += m.chunk.bytes;
  }
  context_.pool().release_now(chunks);
  events::record_unmapped(context_.device(), all, {});
  for (Segment* seg : segs) {
    seg->asleep = true;
    for (Mapping& m : seg->chunks) m.chunk.handle = PhysicalHandle{};
  }
  for (PoolId p : pools) pools_[p].asleep = true;
  mapped_bytes_ -= bytes;
  report.device_bytes += bytes;
  ++report.tags_changed;
  ts.asleep = true;
  ts.mode = mode;
  ts.runs = std::move(runs);
  log(LogLevel::info, "sleep: tag '%s' (%s): %s released, %s copied to host", tag_name(tag).c_str(),
      mode == SleepMode::offload ? "offload" : "discard", format_bytes(bytes).c_str(),
      format_bytes(mode == SleepMode::offload ? live : 0).c_str());
}

void Heap::wake_tag_locked(TagId tag, bool keep_host, SleepReport& report) {
  const std::vector<PoolId> pools = tag_pools_locked(tag);
  const std::vector<Segment*> segs = tag_segments_locked(pools);
  TagSleep& ts = sleeping_[tag];
  std::vector<std::size_t> sizes;
  for (const Segment* seg : segs) {
    for (const Mapping& m : seg->chunks) sizes.push_back(m.chunk.bytes);
  }
  // OutOfMemoryError: nothing changed, the tag stays asleep.
  std::vector<Chunk> chunks = context_.pool().acquire(sizes);
  std::vector<std::vector<Mapping>> planned;
  std::size_t k = 0;
  for (const Segment* seg : segs) {
    std::vector<Mapping> ms = seg->chunks;
    for (Mapping& m : ms) m.chunk = chunks[k++];
    planned.push_back(std::move(ms));
  }
  std::size_t mapped = 0;  // segments mapped so far
  std::vector<std::size_t> stuck;
  auto undo = [&] {
    std::vector<Chunk> back;
    for (std::size_t i = 0; i < planned.size(); ++i) {
      for (std::size_t j = 0; j < planned[i].size(); ++j) {
        const Mapping& m = planned[i][j];
        // A chunk of the failing segment that map_chunks could not unmap
        // may still be mapped there: never reused (logged above).
        bool free = !(i == mapped && std::find(stuck.begin(), stuck.end(), j) != stuck.end());
        if (i < mapped) {
          try {
            backend_.unmap(m.va, m.chunk.bytes);
          } catch (const Error& e) {
            log(LogLevel::error, "wake (undo): unmap failed, chunk kept mapped: %s", e.what());
            free = false;
          }
        }
        if (free) back.push_back(m.chunk);
      }
    }
    context_.pool().give_back(back);
  };
  try {
    for (; mapped < planned.size(); ++mapped) {
      map_chunks(backend_, planned[mapped], "wake", &stuck);
    }
    if (ts.mode == SleepMode::offload && !ts.runs.empty()) {
      copy_runs(backend_, ts.runs, ts.host.data(), CopyDirection::to_device, report);
    }
  } catch (...) {
    if (!stuck.empty()) {
      log(LogLevel::error, "wake: %zu chunk(s) could not be unmapped after a failed map",
          stuck.size());
    }
    undo();
    throw;
  }
  std::size_t bytes = 0;
  std::vector<Mapping> all;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    segs[i]->chunks = planned[i];
    segs[i]->asleep = false;
    for (const Mapping& m : planned[i]) bytes += m.chunk.bytes;
    all.insert(all.end(), planned[i].begin(), planned[i].end());
  }
  events::record_map(context_.device(), all);
  mapped_bytes_ += bytes;
  note_reserved_locked();
  for (const CopyRun& r : ts.runs) report.live_bytes += r.bytes;
  report.device_bytes += bytes;
  ++report.tags_changed;
  for (PoolId p : pools) {
    PoolState& ps = pools_[p];
    ps.asleep = false;
    if (ps.released && ps.live == 0) migrate_pool_locked(p);
  }
  ts.asleep = false;
  ts.runs.clear();
  if (!keep_host) sleeping_.erase(tag);
  log(LogLevel::info, "wake: tag '%s': %s mapped", tag_name(tag).c_str(),
      format_bytes(bytes).c_str());
}

void Heap::drop_sleep_state_locked() {
  for (Segment* seg : segments_) {
    if (!seg->asleep) continue;
    seg->chunks.clear();  // released at sleep: nothing to unmap
    seg->asleep = false;
  }
  sleeping_.clear();
}

}  // namespace vmm
