// PhysicalPool implementation. See physical_pool.hpp for the contract.
//
// Cap accounting: created_bytes is charged under the mutex *before* a handle
// is created outside it, so concurrent acquires can never overshoot the cap;
// a failed create refunds its charge.
#include "allocator/vm/physical_pool.hpp"

#include <algorithm>
#include <string>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

PhysicalPool::PhysicalPool(Backend& backend, const Config& config)
    : backend_(backend),
      classes_(config.chunk_sizes),
      granularity_(backend.granularity()),
      cache_limit_(config.pool_cache_limit),
      cap_bytes_(config.memory_cap_bytes) {
  for (std::size_t c : classes_) {
    if (c == 0 || c % granularity_ != 0 || !is_power_of_two(c)) {
      throw ConfigError("chunk_sizes", "chunk_sizes: " + std::to_string(c) +
                                           " is not a power of two multiple of the device "
                                           "granularity (" +
                                           format_bytes(granularity_) + ")");
    }
  }
  if (classes_.empty() || classes_.front() != granularity_) {
    // The smallest class must be the granularity so any size can be covered
    // without waste beyond rounding.
    classes_.insert(classes_.begin(), granularity_);
    std::sort(classes_.begin(), classes_.end());
    classes_.erase(std::unique(classes_.begin(), classes_.end()), classes_.end());
  }
  if (cap_bytes_ == 0 && config.memory_cap_fraction > 0.0) {
    const DeviceMemoryInfo info = backend_.memory_info();
    cap_bytes_ = align_down(static_cast<std::size_t>(static_cast<double>(info.total_bytes) *
                                                     config.memory_cap_fraction),
                            granularity_);
    // A tiny fraction still means "a cap", never "no cap" (0).
    cap_bytes_ = std::max(cap_bytes_, granularity_);
  }
  stats_.memory_cap_bytes = cap_bytes_;
  free_.resize(classes_.size());
}

PhysicalPool::~PhysicalPool() {
  trim(0);
  trim(0);  // once more for releases that failed the first time
  std::lock_guard lock(mutex_);
  if (stats_.acquired_bytes != 0) {
    log(LogLevel::warn, "physical pool destroyed with %s still acquired (leaked to the driver)",
        format_bytes(stats_.acquired_bytes).c_str());
  }
}

std::size_t PhysicalPool::set_memory_cap(std::size_t bytes) {
  std::vector<Chunk> victims;
  {
    std::lock_guard lock(mutex_);
    cap_bytes_ = bytes;
    stats_.memory_cap_bytes = bytes;
    if (bytes != 0 && stats_.created_bytes > bytes) {
      victims = take_cached_locked(stats_.created_bytes - bytes);
    }
  }
  std::size_t released = 0;
  for (const Chunk& c : victims) released += c.bytes;
  if (!victims.empty()) release_chunks(victims);
  return released;
}

int PhysicalPool::class_index(std::size_t bytes) const {
  auto it = std::lower_bound(classes_.begin(), classes_.end(), bytes);
  if (it == classes_.end() || *it != bytes) return -1;
  return static_cast<int>(it - classes_.begin());
}

std::vector<std::size_t> PhysicalPool::plan(std::size_t bytes) const {
  std::vector<std::size_t> sizes;
  std::size_t left = align_up(bytes, granularity_);
  for (auto it = classes_.rbegin(); it != classes_.rend() && left > 0; ++it) {
    while (left >= *it) {
      sizes.push_back(*it);
      left -= *it;
    }
  }
  return sizes;
}

std::vector<Chunk> PhysicalPool::take_cached_locked(std::size_t bytes) {
  std::vector<Chunk> taken;
  std::size_t got = 0;
  for (std::size_t i = classes_.size(); i-- > 0 && got < bytes;) {
    while (!free_[i].empty() && got < bytes) {
      taken.push_back({free_[i].back(), classes_[i]});
      free_[i].pop_back();
      got += classes_[i];
      stats_.cached_bytes -= classes_[i];
      stats_.created_bytes -= classes_[i];
    }
  }
  return taken;
}

std::vector<Chunk> PhysicalPool::take_retired_locked() {
  std::vector<Chunk> taken = std::move(retired_);
  retired_.clear();
  for (const Chunk& c : taken) {
    stats_.cached_bytes -= c.bytes;
    stats_.created_bytes -= c.bytes;
  }
  return taken;
}

void PhysicalPool::release_chunks(const std::vector<Chunk>& chunks) {
  std::vector<Chunk> failed;
  for (const Chunk& c : chunks) {
    try {
      backend_.release(c.handle);
    } catch (const Error& e) {
      // Keep the handle cached and accounted: a later trim retries it.
      log(LogLevel::warn, "releasing a %s chunk failed (kept cached): %s",
          format_bytes(c.bytes).c_str(), e.what());
      failed.push_back(c);
    }
  }
  std::lock_guard lock(mutex_);
  stats_.releases += chunks.size() - failed.size();
  for (const Chunk& c : failed) {
    if (c.shared) {
      retired_.push_back(c);
    } else {
      free_[static_cast<std::size_t>(class_index(c.bytes))].push_back(c.handle);
    }
    stats_.cached_bytes += c.bytes;
    stats_.created_bytes += c.bytes;
  }
}

std::vector<Chunk> PhysicalPool::acquire(const std::vector<std::size_t>& sizes) {
  // result[i] is the chunk for sizes[i]: cache hits first, then the missing
  // ones are created (indices in `missing`).
  std::vector<Chunk> result(sizes.size());
  std::vector<std::size_t> missing;
  std::vector<Chunk> victims;
  std::size_t need = 0;
  for (std::size_t s : sizes) {
    if (class_index(s) < 0) {
      throw InvalidArgumentError("physical pool: " + format_bytes(s) + " is not a chunk class");
    }
  }
  std::vector<Chunk> hits;
  {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      const std::size_t s = sizes[i];
      auto& list = free_[static_cast<std::size_t>(class_index(s))];
      if (!list.empty()) {
        result[i] = {list.back(), s, ++next_serial_};
        hits.push_back(result[i]);
        list.pop_back();
        stats_.cached_bytes -= s;
        stats_.acquired_bytes += s;
        ++stats_.cache_hits;
      } else {
        missing.push_back(i);
        need += s;
      }
    }
    if (cap_bytes_ != 0 && stats_.created_bytes + need > cap_bytes_) {
      victims = take_cached_locked(stats_.created_bytes + need - cap_bytes_);
      if (stats_.created_bytes + need > cap_bytes_) {
        const std::size_t created = stats_.created_bytes;
        // Undo: cache hits and victims go back to the cache.
        for (const Chunk& c : hits) {
          free_[static_cast<std::size_t>(class_index(c.bytes))].push_back(c.handle);
          stats_.cached_bytes += c.bytes;
          stats_.acquired_bytes -= c.bytes;
        }
        for (const Chunk& c : victims) {
          free_[static_cast<std::size_t>(class_index(c.bytes))].push_back(c.handle);
          stats_.cached_bytes += c.bytes;
          stats_.created_bytes += c.bytes;
        }
        throw OutOfMemoryError("memory cap reached: " + format_bytes(need) +
                               " more would exceed memory_cap " + format_bytes(cap_bytes_) + " (" +
                               format_bytes(created) + " created)");
      }
    }
    stats_.created_bytes += need;  // charge before creating, outside the lock
    stats_.acquired_bytes += need;
    stats_.peak_created_bytes = std::max(stats_.peak_created_bytes, stats_.created_bytes);
  }
  if (!victims.empty()) release_chunks(victims);

  std::vector<Chunk> fresh;
  auto undo = [&](std::size_t uncharged) {
    // Newly created chunks are released (memory is short), cache hits go back.
    release_chunks(fresh);
    std::lock_guard lock(mutex_);
    for (const Chunk& c : hits) {
      free_[static_cast<std::size_t>(class_index(c.bytes))].push_back(c.handle);
      stats_.cached_bytes += c.bytes;
      stats_.acquired_bytes -= c.bytes;
    }
    std::size_t fresh_bytes = 0;
    for (const Chunk& c : fresh) fresh_bytes += c.bytes;
    stats_.created_bytes -= fresh_bytes + uncharged;
    stats_.acquired_bytes -= fresh_bytes + uncharged;
  };

  std::size_t uncharged = need;
  for (std::size_t i : missing) {
    const std::size_t s = sizes[i];
    PhysicalHandle h;
    try {
      try {
        h = backend_.create(s);
      } catch (const DeviceOutOfMemoryError&) {
        // The device is full: give it the whole cache, then try once more.
        std::vector<Chunk> all;
        {
          std::lock_guard lock(mutex_);
          all = take_cached_locked(stats_.cached_bytes);
        }
        if (all.empty()) throw;
        release_chunks(all);
        h = backend_.create(s);
      }
    } catch (const DeviceOutOfMemoryError& e) {
      undo(uncharged);
      const DeviceMemoryInfo info = [&] {
        try {
          return backend_.memory_info();
        } catch (const Error&) {
          return DeviceMemoryInfo{};
        }
      }();
      throw OutOfMemoryError("device " + std::to_string(backend_.device()) +
                             " out of memory creating a " + format_bytes(s) + " chunk (" +
                             format_bytes(info.free_bytes) + " free of " +
                             format_bytes(info.total_bytes) + "): " + e.what());
    } catch (...) {
      undo(uncharged);
      throw;
    }
    std::lock_guard lock(mutex_);
    result[i] = {h, s, ++next_serial_};
    fresh.push_back(result[i]);
    uncharged -= s;
    ++stats_.creates;
  }
  return result;
}

void PhysicalPool::give_back(const std::vector<Chunk>& chunks) {
  return_to_cache(chunks);
  trim(cache_limit_);
}

void PhysicalPool::release_now(const std::vector<Chunk>& chunks) {
  {
    std::lock_guard lock(mutex_);
    for (const Chunk& c : chunks) {
      stats_.acquired_bytes -= c.bytes;
      stats_.created_bytes -= c.bytes;
    }
  }
  release_chunks(chunks);
}

void PhysicalPool::return_to_cache(const std::vector<Chunk>& chunks) {
  std::lock_guard lock(mutex_);
  for (const Chunk& c : chunks) {
    if (c.shared) {
      retired_.push_back(c);  // another process may map it: never reused
    } else {
      free_[static_cast<std::size_t>(class_index(c.bytes))].push_back(c.handle);
    }
    stats_.cached_bytes += c.bytes;
    stats_.acquired_bytes -= c.bytes;
  }
}

std::size_t PhysicalPool::trim(std::size_t target_cached_bytes) {
  std::vector<Chunk> victims;
  std::size_t cached_before = 0;
  {
    std::lock_guard lock(mutex_);
    cached_before = stats_.cached_bytes;
    victims = take_retired_locked();
    if (stats_.cached_bytes > target_cached_bytes) {
      std::vector<Chunk> more = take_cached_locked(stats_.cached_bytes - target_cached_bytes);
      victims.insert(victims.end(), more.begin(), more.end());
    }
    if (victims.empty()) return 0;
  }
  release_chunks(victims);
  std::lock_guard lock(mutex_);
  return cached_before > stats_.cached_bytes ? cached_before - stats_.cached_bytes : 0;
}

std::vector<std::size_t> PhysicalPool::cached_counts() const {
  std::lock_guard lock(mutex_);
  std::vector<std::size_t> counts;
  counts.reserve(free_.size());
  for (const auto& list : free_) counts.push_back(list.size());
  return counts;
}

PoolStats PhysicalPool::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace vmm
