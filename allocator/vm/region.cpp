// Region implementation. See region.hpp for the contract.
#include "allocator/vm/region.hpp"

#include <unistd.h>

#include <algorithm>
#include <string>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "allocator/record/event_ring.hpp"
#include "allocator/record/inspect_registry.hpp"
#include "allocator/vm/chunk_mapper.hpp"
#include "allocator/vm/device_context.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {

// A stretch of the region to back with fresh chunks.
struct Gap {
  std::uintptr_t va;
  std::size_t bytes;
};

}  // namespace

Region::Region(DeviceContext& context, std::size_t capacity, TagId tag)
    : context_(context), granularity_(context.backend().granularity()), tag_(tag) {
  if (capacity == 0) throw InvalidArgumentError("workspace capacity must be at least 1 byte");
  range_ = context_.address_space().allocate(capacity);
  capacity_ = capacity;
  if (tag_ != 0) context_.tagged_regions().add(*this);  // asleep at once if the tag is
  inspect::add_region(*this);  // snapshots see it from now on
}

Region::~Region() {
  inspect::remove_region(*this);
  if (tag_ != 0) context_.tagged_regions().remove(*this);
  try {
    release(nullptr);
  } catch (const std::exception& e) {
    log(LogLevel::error, "releasing a workspace in its destructor failed: %s", e.what());
  }
  unlink_share();  // also when the release failed: this object is going away
}

void Region::check_usable_locked() const {
  if (released_) throw InvalidArgumentError("workspace was released");
}

void Region::check_awake_locked() const {
  check_usable_locked();
  if (asleep_) {
    throw InvalidArgumentError("workspace is asleep (tag '" + tag_name(tag_) +
                               "'): wake the tag first");
  }
}

void Region::requeue_locked(std::vector<Reclaimer::Cancelled>& groups) {
  for (Reclaimer::Cancelled& g : groups) {
    if (g.mappings.empty()) continue;
    pending_.push_back(context_.reclaimer().submit(std::move(g.fences), std::move(g.mappings)));
  }
  groups.clear();
}

void Region::grow_to(std::size_t n) {
  if (n > capacity_) {
    throw InvalidArgumentError("grow to " + std::to_string(n) + " bytes exceeds the capacity of " +
                               std::to_string(capacity_) + " bytes");
  }
  std::lock_guard lock(mutex_);
  check_awake_locked();
  if (n <= size_.load()) return;
  const std::size_t target = align_up(n, granularity_);
  const std::size_t mapped = mapped_.load();
  if (target <= mapped) {
    size_.store(n, std::memory_order_release);
    return;
  }

  // Take back the tail pieces earlier shrinks queued for reclaim. Those
  // already reclaimed left their address range unmapped.
  std::vector<Reclaimer::Cancelled> groups;
  for (Reclaimer::Ticket t : pending_) {
    if (auto c = context_.reclaimer().cancel(t)) groups.push_back(std::move(*c));
  }
  pending_.clear();

  // Lay out [mapped end, target end): reuse taken-back pieces below the new
  // end, fill the holes between them with fresh chunks; pieces wholly past
  // the new end go back to the reclaimer with their own fences.
  struct Piece {
    Mapping mapping;
    std::size_t group;
  };
  std::vector<Piece> pieces;
  for (std::size_t g = 0; g < groups.size(); ++g) {
    for (const Mapping& m : groups[g].mappings) pieces.push_back({m, g});
    groups[g].mappings.clear();
  }
  std::sort(pieces.begin(), pieces.end(),
            [](const Piece& a, const Piece& b) { return a.mapping.va < b.mapping.va; });

  const std::uintptr_t end = range_.base + target;
  std::uintptr_t cursor = range_.base + mapped;
  std::vector<Mapping> reused;
  std::vector<Gap> gaps;
  for (const Piece& p : pieces) {
    if (p.mapping.va >= end) {
      groups[p.group].mappings.push_back(p.mapping);  // stays pending
      continue;
    }
    if (p.mapping.va > cursor) gaps.push_back({cursor, p.mapping.va - cursor});
    reused.push_back(p.mapping);
    cursor = p.mapping.end();
  }
  if (cursor < end) gaps.push_back({cursor, end - cursor});

  auto restore = [&] {
    // Everything taken back returns to the reclaimer: the region is as before.
    for (const Mapping& m : reused) {
      for (const Piece& p : pieces) {
        if (p.mapping.va == m.va) groups[p.group].mappings.push_back(m);
      }
    }
    requeue_locked(groups);
  };

  std::vector<std::size_t> sizes;
  std::vector<std::size_t> gap_first;  // index into sizes of each gap's first chunk
  for (const Gap& g : gaps) {
    gap_first.push_back(sizes.size());
    for (std::size_t s : context_.pool().plan(g.bytes)) sizes.push_back(s);
  }

  std::vector<Chunk> fresh;
  try {
    try {
      fresh = context_.pool().acquire(sizes);
    } catch (const OutOfMemoryError&) {
      // Memory pressure: wait for the pending reclaims (their fences only)
      // and return their memory, then try once more.
      if (context_.reclaimer().drain() == 0) throw;
      context_.pool().trim(0);
      fresh = context_.pool().acquire(sizes);
    }
  } catch (const OutOfMemoryError& e) {
    restore();
    throw OutOfMemoryError("growing a workspace on device " + std::to_string(context_.device()) +
                           " from " + format_bytes(mapped) + " to " + format_bytes(target) +
                           " failed: " + e.what());
  } catch (...) {
    restore();
    throw;
  }

  // Lay the fresh chunks out gap by gap; map them and grant access once per
  // gap (map_chunks undoes its own mappings if it fails).
  std::vector<Mapping> mapped_fresh;
  for (std::size_t g = 0; g < gaps.size(); ++g) {
    std::uintptr_t va = gaps[g].va;
    const std::size_t last = g + 1 < gaps.size() ? gap_first[g + 1] : fresh.size();
    for (std::size_t i = gap_first[g]; i < last; ++i) {
      mapped_fresh.push_back({va, fresh[i]});
      va += fresh[i].bytes;
    }
  }
  std::vector<std::size_t> stuck;
  try {
    map_chunks(context_.backend(), mapped_fresh, "workspace grow", &stuck);
  } catch (...) {
    // A chunk that may still be mapped is never reused: it stays held.
    std::vector<Chunk> back;
    for (std::size_t i = 0; i < fresh.size(); ++i) {
      if (std::find(stuck.begin(), stuck.end(), i) == stuck.end()) back.push_back(fresh[i]);
    }
    context_.pool().give_back(back);
    restore();
    throw;
  }

  // Commit.
  std::vector<Mapping> added = std::move(reused);
  added.insert(added.end(), mapped_fresh.begin(), mapped_fresh.end());
  if (share_) {
    for (Mapping& m : added) m.chunk.shared = true;  // importers may map them
  }
  std::sort(added.begin(), added.end(),
            [](const Mapping& a, const Mapping& b) { return a.va < b.va; });
  events::record_map(context_.device(), mapped_fresh);
  chunks_.insert(chunks_.end(), added.begin(), added.end());
  requeue_locked(groups);
  mapped_.store(std::max(cursor, end) - range_.base, std::memory_order_release);
  size_.store(n, std::memory_order_release);
}

void Region::shrink_to(std::size_t n, Stream stream) {
  std::lock_guard lock(mutex_);
  check_awake_locked();
  if (n >= size_.load()) return;
  const std::uintptr_t keep_end = range_.base + align_up(n, granularity_);
  auto first_detached = std::find_if(chunks_.begin(), chunks_.end(),
                                     [&](const Mapping& m) { return m.va >= keep_end; });
  if (first_detached == chunks_.end()) {
    size_.store(n, std::memory_order_release);
    return;
  }
  // The fence is recorded first: if that fails nothing has changed.
  Fence fence = Fence::record(context_.backend(), stream);
  std::vector<Mapping> detached(first_detached, chunks_.end());
  std::size_t bytes = 0;
  for (const Mapping& m : detached) bytes += m.chunk.bytes;
  pending_.push_back(context_.reclaimer().submit({std::move(fence)}, std::move(detached)));
  chunks_.erase(first_detached, chunks_.end());
  mapped_.fetch_sub(bytes, std::memory_order_acq_rel);
  size_.store(n, std::memory_order_release);
}

void Region::release(Stream stream) {
  release_memory(stream);
  unlink_share();
}

void Region::release_memory(Stream stream) {
  std::lock_guard lock(mutex_);
  if (released_) return;
  std::vector<Fence> fences;
  std::vector<Mapping> mappings = chunks_;
  std::vector<Reclaimer::Cancelled> groups;
  for (Reclaimer::Ticket t : pending_) {
    if (auto c = context_.reclaimer().cancel(t)) groups.push_back(std::move(*c));
  }
  pending_.clear();
  if (!mappings.empty()) {
    try {
      fences.push_back(Fence::record(context_.backend(), stream));
    } catch (...) {
      requeue_locked(groups);
      throw;
    }
  }
  for (Reclaimer::Cancelled& g : groups) {
    fences.insert(fences.end(), g.fences.begin(), g.fences.end());
    mappings.insert(mappings.end(), g.mappings.begin(), g.mappings.end());
  }
  released_ = true;
  asleep_ = false;  // nothing mapped: the range goes as it is
  host_.reset();
  chunks_.clear();
  mapped_.store(0, std::memory_order_release);
  size_.store(0, std::memory_order_release);
  if (mappings.empty()) {
    context_.address_space().deallocate(range_);
  } else {
    context_.reclaimer().submit(std::move(fences), std::move(mappings), range_);
  }
}

std::shared_ptr<RegionShare> Region::share() {
  std::lock_guard lock(mutex_);
  check_awake_locked();
  if (!share_) {
    auto link = std::make_shared<RegionShare>();
    link->region_ = this;  // not yet visible to any other thread
    for (Mapping& m : chunks_) m.chunk.shared = true;
    share_ = std::move(link);
  }
  return share_;
}

void Region::unlink_share() noexcept {
  std::shared_ptr<RegionShare> link;
  {
    std::lock_guard lock(mutex_);
    link = share_;
  }
  if (!link) return;
  std::lock_guard lock(link->mutex_);
  link->region_ = nullptr;
}

SharedLayout Region::shared_layout(const std::function<bool(std::uint64_t)>& wants_fd) {
  std::lock_guard lock(mutex_);
  check_usable_locked();
  SharedLayout out;
  out.device = context_.device();
  out.capacity = capacity_;
  out.size = size_.load();
  out.chunks.reserve(chunks_.size());
  try {
    // Under the lock the chunks stay attached, so none can be released (and
    // its handle reused) while it is exported.
    for (const Mapping& m : chunks_) {
      SharedChunk c;
      c.offset = m.va - range_.base;
      c.bytes = m.chunk.bytes;
      c.serial = m.chunk.serial;
      if (wants_fd(c.serial)) c.fd = context_.backend().export_handle(m.chunk.handle);
      out.chunks.push_back(c);
    }
  } catch (...) {
    for (const SharedChunk& c : out.chunks) {
      if (c.fd >= 0) ::close(c.fd);
    }
    throw;
  }
  return out;
}

SharedLayout RegionShare::layout(const std::function<bool(std::uint64_t)>& wants_fd) {
  std::lock_guard lock(mutex_);
  if (region_ == nullptr) throw InvalidArgumentError("the shared workspace was released");
  return region_->shared_layout(wants_fd);
}

RegionInfo Region::info() const {
  std::lock_guard lock(mutex_);
  RegionInfo out;
  out.range = range_;
  out.size = size_.load();
  out.mapped_bytes = mapped_.load();
  out.chunks = chunks_;
  out.pending = pending_;
  out.tag = tag_;
  out.asleep = asleep_;
  out.asleep_bytes = asleep_ ? align_up(out.size, granularity_) : 0;
  return out;
}

}  // namespace vmm
