// Heap: checkpoints of graph pools (Allocator::checkpoint_pool and
// restore_pool, vmmalloc/pool_checkpoint.hpp). A checkpoint is the pool's
// live blocks; a restore frees every block live in the pool now, then
// carves each checkpointed block out of the pool's free memory at its
// address, as an allocation of its size on its stream (counters, events of
// the pointer shard) but at that address. Nothing is moved, mapped or
// unmapped.
#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>

#include "allocator/base/units.hpp"
#include "allocator/heap/heap.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {

std::string hex(std::uintptr_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

void Heap::check_checkpointable_locked(PoolId pool, const char* what) const {
  auto it = pools_.find(pool);
  if (pool == 0 || it == pools_.end() || !it->second.graph || it->second.released) {
    throw InvalidArgumentError(std::string(what) + ": " + std::to_string(pool) +
                               " is not a live graph pool");
  }
  if (it->second.asleep) {
    throw InvalidArgumentError(std::string(what) + ": pool " + std::to_string(pool) +
                               " is asleep (wake its tag first)");
  }
  for (const auto& [stream, p] : capturing_into_) {
    if (p == pool) {
      throw InvalidArgumentError(std::string(what) + ": pool " + std::to_string(pool) +
                                 " is being captured into (end the capture first)");
    }
  }
}

std::vector<Heap::Block*> Heap::pool_live_locked(PoolId pool) const {
  std::vector<Block*> out;
  for (Segment* seg : segments_) {
    if (seg->pool != pool) continue;
    for (Block* b = seg->last; b != nullptr; b = b->prev) {
      if (b->state.get() == Block::State::live) out.push_back(b);
    }
  }
  std::sort(out.begin(), out.end(), [](const Block* a, const Block* b) { return a->addr < b->addr; });
  return out;
}

PoolCheckpoint Heap::checkpoint_pool(PoolId pool) const {
  std::lock_guard lock(mutex_);
  check_checkpointable_locked(pool, "checkpoint_pool");
  PoolCheckpoint cp;
  cp.pool = pool;
  for (Block* b : pool_live_locked(pool)) {
    PtrShard& sh = ptr_shard(b->addr);
    std::lock_guard shard(sh.mutex);  // a live block's stream is the shard's
    cp.live.push_back({b->addr, b->size, b->requested.get(), b->stream});
  }
  return cp;
}

std::vector<void*> Heap::pool_live_blocks(PoolId pool) const {
  std::lock_guard lock(mutex_);
  auto it = pools_.find(pool);
  if (pool == 0 || it == pools_.end()) {
    throw InvalidArgumentError("pool_live_blocks: " + std::to_string(pool) + " is not a pool");
  }
  std::vector<void*> out;
  for (Block* b : pool_live_locked(pool)) out.push_back(reinterpret_cast<void*>(b->addr));
  return out;
}

void Heap::free_live_locked(Block* b) {
  std::size_t size = 0, requested = 0;
  {
    PtrShard& sh = ptr_shard(b->addr);
    std::lock_guard shard(sh.mutex);
    b->epoch = use_.now();
    b->state.set(Block::State::cached);
    ++sh.frees;
    size = b->size;
    requested = b->requested.get();
  }
  usage_.freed(nullptr, size_kind(size), static_cast<std::int64_t>(size),
               static_cast<std::int64_t>(requested));
  --pools_[b->pool].live;
  free_locked(b);
}

Heap::Block* Heap::free_cover_locked(PoolId pool, std::uintptr_t addr, std::size_t size) {
  Block* b = nullptr;
  for (Segment* seg : segments_) {
    if (seg->pool != pool || addr < seg->range.base || addr >= seg->range.base + seg->range.bytes) {
      continue;
    }
    for (Block* x = seg->last; x != nullptr; x = x->prev) {
      if (x->addr <= addr && addr < x->end()) {
        b = x;
        break;
      }
    }
    break;
  }
  if (b == nullptr || b->state.get() != Block::State::free) return nullptr;
  // Free neighbours up to the end, joined when they may be (one stream, or
  // their users' work done: refresh_locked made those neutral).
  while (b->end() < addr + size) {
    Block* n = b->next;
    if (n == nullptr || n->state.get() != Block::State::free || n->addr != b->end() ||
        !mergeable(b, n)) {
      return nullptr;
    }
    index_erase_locked(b);
    index_erase_locked(n);
    merge_next_locked(b);
    index_insert_locked(b);
  }
  return b;
}

CheckpointDelta Heap::restore_pool(const PoolCheckpoint& cp) {
  // The checkpoint is the caller's: its blocks must be ascending, disjoint
  // and of sizes an allocation could have (checked before anything changes).
  for (std::size_t i = 0; i < cp.live.size(); ++i) {
    const PoolCheckpoint::LiveBlock& lb = cp.live[i];
    if (lb.size == 0 || lb.size % kBlockAlignment != 0 || lb.addr % kBlockAlignment != 0 ||
        (i > 0 && cp.live[i - 1].addr + cp.live[i - 1].size > lb.addr)) {
      throw InvalidArgumentError("restore_pool: the checkpoint's block " + std::to_string(i) +
                                 " at " + hex(lb.addr) +
                                 " is not an aligned block after the one before it");
    }
  }
  std::lock_guard lock(mutex_);
  check_checkpointable_locked(cp.pool, "restore_pool");
  StreamUse::Round round(use_);
  CheckpointDelta delta;
  delta.allocated.reserve(cp.live.size());
  // 1. Free every block live in the pool now, as deallocate does.
  for (Block* b : pool_live_locked(cp.pool)) {
    delta.freed.push_back(reinterpret_cast<void*>(b->addr));
    free_live_locked(b);
  }
  // 2. Carve the checkpoint's blocks back out, at their addresses. Any
  // failure frees what was carved: the pool's blocks are all free then.
  refresh_locked();
  try {
    for (const PoolCheckpoint::LiveBlock& lb : cp.live) carve_at_locked(cp.pool, lb);
  } catch (...) {
    for (Block* b : pool_live_locked(cp.pool)) free_live_locked(b);
    throw;
  }
  for (const PoolCheckpoint::LiveBlock& lb : cp.live) {
    delta.allocated.push_back(reinterpret_cast<void*>(lb.addr));
  }
  return delta;
}

void Heap::carve_at_locked(PoolId pool, const PoolCheckpoint::LiveBlock& lb) {
  Block* f = free_cover_locked(pool, lb.addr, lb.size);
  if (f == nullptr) {
    throw InvalidArgumentError("restore_pool: the checkpoint's block at " + hex(lb.addr) + " (" +
                               format_bytes(lb.size) + ") is not in free memory of pool " +
                               std::to_string(pool) +
                               " (its layout changed since the checkpoint, or other streams "
                               "still use it); the pool's blocks are all free");
  }
  if (!usable_locked(f, lb.stream)) {
    // Work of other streams on this memory may still be queued: wait for
    // their fences (theirs only) before handing it to lb.stream.
    std::vector<Stream> users = f->extra;
    users.push_back(f->stream);
    std::vector<Fence> fences;
    for (Stream s : users) {
      if (s == lb.stream) continue;
      std::optional<Fence> fence = use_.fence_for(s, f->epoch);
      if (!fence) {
        throw InvalidArgumentError("restore_pool: a stream that used the pool's memory is "
                                   "being captured into a CUDA graph");
      }
      if (*fence) fences.push_back(std::move(*fence));
    }
    for (const Fence& fence : fences) fence.wait();
  }
  if (f->addr < lb.addr) {
    // Split off the free front; the block then starts at lb.addr.
    index_erase_locked(f);
    Block* rest = split_locked(f, lb.addr - f->addr);
    index_insert_locked(f);
    f = rest;
  }
  use_.revive(lb.stream);
  take_locked(f, lb.size, lb.requested, lb.stream);
}

}  // namespace vmm
