// Heap: graph pools (CUDA graph capture). A stream between begin_pool and
// end_pool allocates into its pool's own free index and growing segments;
// once released and without live blocks, a pool's memory migrates to the
// general pool (0). All guarded by the heap mutex; active_pools_ tells the
// hot path (without the mutex) whether any stream allocates into a pool.
#include <string>

#include "allocator/heap/heap.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

PoolId Heap::pool_for_locked(Stream stream) const {
  for (const auto& [s, p] : capturing_into_) {
    if (s == stream) return p;
  }
  return 0;
}

PoolId Heap::allocation_pool_locked(Stream stream) {
  PoolId pool = pool_for_locked(stream);
  if (pool == 0) {
    const TagId tag = current_tag();
    if (tag == 0) return 0;
    auto [it, fresh] = tag_pools_.emplace(tag, 0);
    if (fresh) {  // the tag's pool, made on its first allocation
      it->second = next_pool_++;
      PoolState& made = pools_[it->second];
      made.tag = tag;
      made.graph = false;
    }
    pool = it->second;
  }
  // A tag put to sleep before it had memory is asleep too.
  const PoolState& ps = pools_[pool];
  if (ps.asleep || (ps.tag != 0 && asleep_locked(ps.tag))) {
    throw InvalidArgumentError("allocation under tag '" + tag_name(ps.tag) +
                               "' while it is asleep (wake it first)");
  }
  return pool;
}

PoolId Heap::create_pool() {
  std::lock_guard lock(mutex_);
  const PoolId id = next_pool_++;
  pools_[id];
  return id;
}

void Heap::begin_pool(PoolId pool, Stream stream) {
  std::lock_guard lock(mutex_);
  auto it = pools_.find(pool);
  if (pool == 0 || it == pools_.end() || it->second.released || !it->second.graph) {
    throw InvalidArgumentError("begin_pool: " + std::to_string(pool) + " is not a live graph pool");
  }
  for (const auto& [s, p] : capturing_into_) {
    if (s == stream) {
      throw InvalidArgumentError("begin_pool: the stream already allocates into pool " +
                                 std::to_string(p));
    }
  }
  if (it->second.asleep) {
    throw InvalidArgumentError("begin_pool: pool " + std::to_string(pool) + " (tag '" +
                               tag_name(it->second.tag) + "') is asleep");
  }
  // A capture under a tag scope tags its pool (the first one to begin it).
  if (it->second.tag == 0) it->second.tag = current_tag();
  capturing_into_.emplace_back(stream, pool);
  active_pools_.store(capturing_into_.size(), std::memory_order_release);
}

void Heap::end_pool(PoolId pool) {
  std::lock_guard lock(mutex_);
  auto it = pools_.find(pool);
  if (pool == 0 || it == pools_.end() || !it->second.graph) {
    throw InvalidArgumentError("end_pool: " + std::to_string(pool) + " is not a graph pool");
  }
  std::erase_if(capturing_into_, [&](const auto& e) { return e.second == pool; });
  active_pools_.store(capturing_into_.size(), std::memory_order_release);
}

void Heap::release_pool(PoolId pool) {
  std::lock_guard lock(mutex_);
  auto it = pools_.find(pool);
  if (pool == 0 || it == pools_.end() || it->second.released || !it->second.graph) {
    throw InvalidArgumentError("release_pool: " + std::to_string(pool) +
                               " is not a live graph pool");
  }
  std::erase_if(capturing_into_, [&](const auto& e) { return e.second == pool; });
  active_pools_.store(capturing_into_.size(), std::memory_order_release);
  it->second.released = true;
  // A sleeping pool migrates when it wakes (wake_tag_locked).
  if (it->second.live == 0 && !it->second.asleep) migrate_pool_locked(pool);
}

void Heap::set_pool_use_on_oom(PoolId pool, bool on) {
  std::lock_guard lock(mutex_);
  auto it = pools_.find(pool);
  if (pool == 0 || it == pools_.end() || it->second.released || !it->second.graph) {
    if (!on) return;  // nothing lends: already so (MemPool's destructor after the pool went)
    throw InvalidArgumentError("set_pool_use_on_oom: " + std::to_string(pool) +
                               " is not a live graph pool");
  }
  it->second.use_on_oom = on;
}

void Heap::set_pool_no_split(PoolId pool) {
  std::lock_guard lock(mutex_);
  auto it = pools_.find(pool);
  if (pool == 0 || it == pools_.end() || it->second.released || !it->second.graph) {
    throw InvalidArgumentError("set_pool_no_split: " + std::to_string(pool) +
                               " is not a live graph pool");
  }
  it->second.no_split = true;
}

Heap::Block* Heap::lend_for_oom_locked(SizeKind kind, Stream stream, std::size_t rounded) {
  for (auto& [pid, p] : pools_) {
    if (pid == 0 || !p.use_on_oom || p.released || p.asleep) continue;
    if (Block* b = find_fit_locked(pid, kind, stream, rounded)) return b;
  }
  return nullptr;
}

bool Heap::is_growing_locked(const Segment* seg) const {
  auto it = pools_.find(seg->pool);
  return it != pools_.end() && it->second.growing[static_cast<int>(seg->kind)] == seg;
}

void Heap::migrate_pool_locked(PoolId pool) {
  auto it = pools_.find(pool);
  if (it == pools_.end()) return;
  // Its growing segments become ordinary ones of the general pool; one that
  // was kept only as a growing segment (no chunks left) goes now.
  const std::array<Segment*, kSizeKinds> fronts = it->second.growing;
  it->second.growing.fill(nullptr);
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
    it->second.index[k].move_into(pools_[0].index[k], [](Block* b) { b->pool = 0; });
  }
  pools_.erase(pool);
}

}  // namespace vmm
