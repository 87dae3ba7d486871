// Thread caches: see thread_cache.hpp for the types and their locks.
#include "allocator/heap/thread_cache.hpp"

#include <algorithm>
#include <unordered_map>
#include <utility>

#include "allocator/base/fork_guard.hpp"

namespace vmm::heap {

namespace {

std::atomic<std::uint64_t> g_next_id{1};

// Live heaps' caches by id: a thread that exits hands its caches back only
// to heaps that still exist. Never destroyed (threads may exit during
// static destruction).
struct LiveHeaps {
  std::mutex mutex;
  std::unordered_map<std::uint64_t, ThreadCaches*> heaps;

  static LiveHeaps& get() {
    static LiveHeaps* r = new LiveHeaps();
    return *r;
  }
};

}  // namespace

// ---------------------------------------------------------- ThreadCache

ThreadCache::List& ThreadCache::add(Stream stream, std::size_t size) {
  if (2 * (slots_used + 1) > table.size()) {
    // Grow (at most half full, so probes stay short and find() ends).
    std::vector<List> old = std::move(table);
    table.assign(std::max(kSlots, 2 * old.size()), List{});
    const std::size_t mask = table.size() - 1;
    for (List& l : old) {
      if (l.size == 0) continue;
      std::size_t i = hash(l.stream, l.size) & mask;
      while (table[i].size != 0) i = (i + 1) & mask;
      table[i] = std::move(l);
    }
  }
  const std::size_t mask = table.size() - 1;
  std::size_t i = hash(stream, size) & mask;
  while (table[i].size != 0) i = (i + 1) & mask;
  table[i].stream = stream;
  table[i].size = size;
  ++slots_used;
  return table[i];
}

void ThreadCache::drain(std::vector<Block*>& out, std::optional<std::uint32_t> idle_before) {
  if (blocks == 0 && !idle_before) {
    // Nothing cached: only drop the slots, so sizes seen once do not pile up.
    if (slots_used != 0) {
      table.assign(kSlots, List{});
      slots_used = 0;
    }
    return;
  }
  std::vector<List> keep;
  for (List& l : table) {
    if (l.size == 0) continue;
    // "Idle": last used before `idle_before` (wrap-around safe).
    if (idle_before && static_cast<std::int32_t>(*idle_before - l.last_use) < 0) {
      keep.push_back(std::move(l));
      continue;
    }
    out.insert(out.end(), l.blocks.begin(), l.blocks.end());
    blocks -= l.blocks.size();
  }
  table.assign(kSlots, List{});
  slots_used = 0;
  for (List& l : keep) {
    List& n = find_or_add(l.stream, l.size);
    n.last_use = l.last_use;
    n.blocks = std::move(l.blocks);
  }
}

// --------------------------------------------------------- ThreadCaches

ThreadCaches::ThreadCaches(OnThreadExit on_thread_exit)
    : id_(g_next_id.fetch_add(1, std::memory_order_relaxed)),
      on_thread_exit_(std::move(on_thread_exit)) {}

void ThreadCaches::publish() {
  LiveHeaps& r = LiveHeaps::get();
  std::lock_guard lock(r.mutex);
  r.heaps.emplace(id_, this);
}

void ThreadCaches::withdraw() {
  LiveHeaps& r = LiveHeaps::get();
  std::lock_guard lock(r.mutex);
  r.heaps.erase(id_);
}

// A thread's caches, one per heap it used; handed back when it exits.
struct ExitingThread {
  std::vector<std::pair<std::uint64_t, std::shared_ptr<ThreadCache>>> caches;
  ~ExitingThread();
};

namespace {

// The last cache used, in trivially destructible thread-locals (plain TLS
// reads); the caches themselves in an ExitingThread, whose destructor hands
// them back when the thread exits.
thread_local std::uint64_t t_last_id = 0;
thread_local ThreadCache* t_last = nullptr;
thread_local bool t_exiting = false;

}  // namespace

ExitingThread::~ExitingThread() {
  t_exiting = true;
  t_last_id = 0;
  t_last = nullptr;
  // The thread that called exit() in a forked child: another thread of the
  // parent may have held LiveHeaps' or a heap's lock at the fork, and none
  // is ever released here. The caches go with the process (fork_guard.hpp).
  if (in_forked_child()) return;
  LiveHeaps& r = LiveHeaps::get();
  std::lock_guard lock(r.mutex);
  for (auto& [id, tc] : caches) {
    auto it = r.heaps.find(id);
    if (it != r.heaps.end()) it->second->on_thread_exit_(*tc);
  }
}

ThreadCache* ThreadCaches::mine() {
  if (t_last_id == id_) return t_last;
  if (t_exiting) return nullptr;
  thread_local ExitingThread holder;
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
      std::lock_guard lock(mutex_);
      caches_.push_back(tc);
    }
    holder.caches.emplace_back(id_, tc);
    found = tc.get();
  }
  t_last_id = id_;
  t_last = found;
  return found;
}

Block* ThreadCaches::steal(ThreadCache& tc, Stream stream, std::size_t size) {
  std::lock_guard caches_lock(mutex_);
  for (const std::shared_ptr<ThreadCache>& other : caches_) {
    if (other.get() == &tc) continue;
    if (Block* b = pop(*other, stream, size)) return b;
  }
  return nullptr;
}

void ThreadCaches::drain_all(std::vector<Block*>& out, bool detach) {
  std::lock_guard caches_lock(mutex_);
  for (const std::shared_ptr<ThreadCache>& tc : caches_) {
    std::lock_guard lock(tc->lock);
    tc->drain(out);
    if (detach) {
      tc->detached = true;
      detached_hits_ += tc->hits;
      tc->hits = 0;
    }
  }
  if (detach) caches_.clear();
}

void ThreadCaches::drain_one(ThreadCache& tc, std::vector<Block*>& out) {
  std::lock_guard lock(tc.lock);
  tc.drain(out);
}

void ThreadCaches::drain_idle(std::vector<Block*>& out, std::uint32_t idle_ticks) {
  const std::uint32_t idle_before = clock_.load(std::memory_order_relaxed) - idle_ticks;
  std::lock_guard caches_lock(mutex_);
  for (const std::shared_ptr<ThreadCache>& tc : caches_) {
    std::lock_guard lock(tc->lock);
    if (tc->blocks != 0) tc->drain(out, idle_before);
  }
}

void ThreadCaches::detach(ThreadCache& tc, std::vector<Block*>& out) {
  std::lock_guard caches_lock(mutex_);
  {
    std::lock_guard tc_lock(tc.lock);
    tc.drain(out);
    tc.detached = true;
    detached_hits_ += tc.hits;
    tc.hits = 0;
  }
  std::erase_if(caches_, [&](const std::shared_ptr<ThreadCache>& c) { return c.get() == &tc; });
}

void ThreadCaches::add_unpublished_usage(UsageCounters::Usage& into) const {
  std::lock_guard caches_lock(mutex_);
  for (const std::shared_ptr<ThreadCache>& tc : caches_)
    UsageCounters::add_unpublished(tc->usage, into);
}

std::uint64_t ThreadCaches::hits() const {
  std::lock_guard caches_lock(mutex_);
  std::uint64_t out = detached_hits_;
  for (const std::shared_ptr<ThreadCache>& tc : caches_) {
    std::lock_guard lock(tc->lock);
    out += tc->hits;
  }
  return out;
}

}  // namespace vmm::heap
