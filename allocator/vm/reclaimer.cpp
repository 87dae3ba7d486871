// Reclaimer implementation. See reclaimer.hpp for the contract.
#include "allocator/vm/reclaimer.hpp"

#include <algorithm>
#include <chrono>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "allocator/record/event_ring.hpp"
#include "allocator/record/snapshot_views.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {
// How often the background thread queries pending fences while any exist.
constexpr auto kPollInterval = std::chrono::microseconds(500);
// How often the thread wakes for its periodic tasks when nothing is pending.
constexpr auto kTaskTick = std::chrono::milliseconds(5);
}  // namespace

Reclaimer::Reclaimer(Backend& backend, PhysicalPool& pool, AddressSpace& space,
                     bool background_thread)
    : backend_(backend), pool_(pool), space_(space) {
  if (background_thread) thread_ = std::thread([this] { run(); });
}

Reclaimer::~Reclaimer() {
  stop_background_thread();
  try {
    drain(/*force=*/true);
  } catch (const std::exception& e) {
    log(LogLevel::warn, "reclaimer shutdown: %s", e.what());
  }
}

void Reclaimer::stop_background_thread() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

Reclaimer::Ticket Reclaimer::submit(std::vector<Fence> fences, std::vector<Mapping> mappings,
                                    VaRange range) {
  Entry e;
  e.fences = std::move(fences);
  e.mappings = std::move(mappings);
  e.range = range;
  for (const Mapping& m : e.mappings) e.bytes += m.alias ? 0 : m.chunk.bytes;
  Ticket t;
  {
    std::lock_guard lock(mutex_);
    t = e.ticket = next_ticket_++;
    stats_.pending_bytes += e.bytes;
    entries_.push_back(std::move(e));
    stats_.pending_entries = entries_.size();
  }
  wake_.notify_one();
  return t;
}

std::optional<Reclaimer::Cancelled> Reclaimer::cancel(Ticket ticket) {
  std::unique_lock lock(mutex_);
  for (;;) {
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const Entry& e) { return e.ticket == ticket; });
    if (it == entries_.end()) return std::nullopt;  // already reclaimed
    if (it->in_progress) {
      finished_.wait(lock);
      continue;
    }
    Cancelled out{std::move(it->fences), std::move(it->mappings)};
    stats_.pending_bytes -= it->bytes;
    ++stats_.cancelled_entries;
    entries_.erase(it);
    stats_.pending_entries = entries_.size();
    return out;
  }
}

std::vector<Reclaimer::Entry*> Reclaimer::claim(bool wait) {
  std::vector<Entry*> ready;
  std::lock_guard lock(mutex_);
  for (Entry& e : entries_) {
    if (e.in_progress) continue;
    bool done = true;
    if (!wait) {
      try {
        done = std::all_of(e.fences.begin(), e.fences.end(),
                           [](const Fence& f) { return f.completed(); });
      } catch (const Error& err) {
        // A fence that cannot be queried is left pending: unmapping memory
        // that work may still use is never the safe choice.
        log(LogLevel::warn, "reclaimer: fence query failed: %s", err.what());
        done = false;
      }
    }
    if (done) {
      e.in_progress = true;
      ready.push_back(&e);
    }
  }
  return ready;
}

bool Reclaimer::reclaim(Entry& e) {
  std::vector<Chunk> unmapped;
  std::vector<Mapping> still_mapped;
  for (const Mapping& m : e.mappings) {
    try {
      backend_.unmap(m.va, m.chunk.bytes);
      if (!m.alias) unmapped.push_back(m.chunk);
    } catch (const Error& err) {
      log(LogLevel::warn, "reclaimer: unmapping %s failed (will retry): %s",
          format_bytes(m.chunk.bytes).c_str(), err.what());
      still_mapped.push_back(m);
    }
  }
  events::record_unmapped(backend_.device(), e.mappings, still_mapped);
  std::size_t done_bytes = 0;
  for (const Chunk& c : unmapped) done_bytes += c.bytes;
  bool complete = true;
  {
    // Pending -> cached in one step under our lock (see accounting()).
    std::lock_guard lock(mutex_);
    pool_.return_to_cache(unmapped);
    stats_.pending_bytes -= done_bytes;
    stats_.reclaimed_bytes += done_bytes;
    e.bytes -= done_bytes;
    if (!still_mapped.empty()) {
      // Its fences are complete; the next poll retries the rest.
      ++stats_.failures;
      e.mappings = std::move(still_mapped);
      complete = false;
    } else {
      e.mappings.clear();
    }
  }
  if (!unmapped.empty()) pool_.trim(pool_.cache_limit());
  return complete;
}

void Reclaimer::finish(const std::vector<Entry*>& claimed, const std::vector<bool>& complete) {
  if (claimed.empty()) return;
  std::vector<VaRange> ranges;
  {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < claimed.size(); ++i) {
      Entry* e = claimed[i];
      e->in_progress = false;
      if (!complete[i]) continue;
      ++stats_.reclaimed_entries;
      if (!e->range.empty()) ranges.push_back(e->range);
      entries_.remove_if([e](const Entry& x) { return &x == e; });
    }
    stats_.pending_entries = entries_.size();
  }
  for (const VaRange& r : ranges) space_.deallocate(r);
  finished_.notify_all();
}

std::size_t Reclaimer::poll() {
  std::vector<Entry*> ready = claim(false);
  std::vector<bool> complete;
  for (Entry* e : ready) complete.push_back(reclaim(*e));
  finish(ready, complete);
  return static_cast<std::size_t>(std::count(complete.begin(), complete.end(), true));
}

std::size_t Reclaimer::drain(bool force) {
  std::vector<Entry*> ready = claim(true);
  std::vector<bool> complete;
  std::size_t reclaimed = 0;
  for (Entry* e : ready) {
    bool waited = true;
    for (const Fence& f : e->fences) {
      try {
        f.wait();
      } catch (const Error& err) {
        log(LogLevel::warn, "reclaimer: fence wait failed%s: %s",
            force ? " (shutting down: unmapping anyway)" : " (entry kept)", err.what());
        waited = false;
      }
    }
    bool ok = false;
    if (waited || force) {
      ok = reclaim(*e);
      if (!ok) ok = reclaim(*e);  // one retry: its fences are done
    }
    complete.push_back(ok);
    if (ok) ++reclaimed;
  }
  finish(ready, complete);
  // Entries another thread was reclaiming when we started: wait for them.
  std::unique_lock lock(mutex_);
  finished_.wait(lock, [&] {
    return std::none_of(entries_.begin(), entries_.end(),
                        [](const Entry& x) { return x.in_progress; });
  });
  return reclaimed;
}

ReclaimerStats Reclaimer::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

Reclaimer::Accounting Reclaimer::accounting() const {
  std::lock_guard lock(mutex_);
  return {pool_.stats(), stats_};
}

void Reclaimer::run() {
  try {
    backend_.prepare_background_thread();
  } catch (const std::exception& e) {
    log(LogLevel::warn, "reclaimer thread set-up failed: %s", e.what());
  }
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (entries_.empty()) {
      if (has_tasks_.load()) {
        wake_.wait_for(lock, kTaskTick, [&] { return stopping_ || !entries_.empty(); });
        lock.unlock();
        run_due_tasks();
        lock.lock();
      } else {
        wake_.wait(lock, [&] { return stopping_ || !entries_.empty() || has_tasks_.load(); });
      }
      continue;
    }
    lock.unlock();
    try {
      poll();
    } catch (const std::exception& e) {
      log(LogLevel::warn, "reclaimer: %s", e.what());
    }
    run_due_tasks();
    lock.lock();
    wake_.wait_for(lock, kPollInterval, [&] { return stopping_; });
  }
}

Reclaimer::TaskId Reclaimer::add_background_task(std::function<void()> task,
                                                 std::chrono::milliseconds interval) {
  TaskId id;
  {
    std::lock_guard lock(tasks_mutex_);
    id = next_task_++;
    tasks_.push_back({id, std::move(task), interval, std::chrono::steady_clock::now() + interval});
    has_tasks_.store(true);
  }
  {
    std::lock_guard lock(mutex_);  // no lost wake-up against run()'s predicate
  }
  wake_.notify_all();
  return id;
}

void Reclaimer::remove_background_task(TaskId id) {
  std::lock_guard lock(tasks_mutex_);  // waits for a running task
  tasks_.erase(
      std::remove_if(tasks_.begin(), tasks_.end(), [&](const Task& t) { return t.id == id; }),
      tasks_.end());
  has_tasks_.store(!tasks_.empty());
}

void Reclaimer::run_due_tasks() {
  if (!has_tasks_.load()) return;
  std::lock_guard lock(tasks_mutex_);
  const auto now = std::chrono::steady_clock::now();
  for (Task& t : tasks_) {
    if (now < t.next) continue;
    t.next = now + t.interval;
    try {
      t.fn();
    } catch (const std::exception& e) {
      log(LogLevel::warn, "reclaimer background task: %s", e.what());
    }
  }
}

// The pending reclaims and their fences, for snapshots. Fences are reported
// as seen so far (Fence::known_complete), never queried: no driver call.
std::vector<ReclaimView> Reclaimer::describe() const {
  std::lock_guard lock(mutex_);
  std::vector<ReclaimView> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_) {
    ReclaimView v;
    v.ticket = e.ticket;
    v.bytes = e.bytes;
    v.in_progress = e.in_progress;
    for (const Fence& f : e.fences) v.fences_complete.push_back(f.known_complete());
    for (const Mapping& m : e.mappings) v.mappings.push_back({m.va, m.chunk.bytes, m.alias});
    v.range = e.range;
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace vmm
