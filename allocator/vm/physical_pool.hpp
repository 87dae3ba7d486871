// PhysicalPool: physical memory handles in power-of-two chunk classes.
//
// Chunks are created on demand through the backend, cached when given back
// (up to Config::pool_cache_limit bytes), and released to the device by
// policy: above the cache limit, to make room under the memory cap, and when
// the device itself runs out. The pool owns the physical accounting and the
// memory cap. It never maps anything: callers map the chunks they acquire.
//
// Shared chunks (Chunk::shared: exported to another process, which may still
// map them) are never handed out again: given back, they are released to the
// device at the next trim (every give_back and every reclaim trims), and the
// memory lives on only as long as the other process holds it.
//
// Thread-safety: one mutex guards the free lists and counters; backend calls
// (create/release) are made outside it, so a slow create never blocks a
// cache hit on another thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "allocator/backend/backend.hpp"
#include "vmmalloc/config.hpp"

namespace vmm {

struct PoolStats {
  std::size_t created_bytes = 0;   // all live handles (acquired + cached)
  std::size_t cached_bytes = 0;    // free handles kept in the cache
  std::size_t acquired_bytes = 0;  // handed out (mapped or pending reclaim)
  std::size_t peak_created_bytes = 0;
  std::size_t memory_cap_bytes = 0;  // 0: no cap
  std::uint64_t creates = 0;
  std::uint64_t releases = 0;
  std::uint64_t cache_hits = 0;
};

class PhysicalPool {
 public:
  // Throws ConfigError if a chunk class is not a multiple of the backend's
  // granularity.
  PhysicalPool(Backend& backend, const Config& config);
  // Releases every cached chunk. Chunks still acquired are a caller bug and
  // are left alone (reported in the log).
  ~PhysicalPool();
  PhysicalPool(const PhysicalPool&) = delete;
  PhysicalPool& operator=(const PhysicalPool&) = delete;

  // Chunk sizes that cover `bytes` (rounded up to the granularity) with the
  // fewest chunks: largest class first.
  std::vector<std::size_t> plan(std::size_t bytes) const;

  // Acquires one chunk of each size in `sizes` (each a chunk class), in that
  // order (result[i].bytes == sizes[i]): cached chunks first, then new ones. All or nothing: on
  // failure every chunk taken is given back. Throws OutOfMemoryError when the memory cap or the
  // device (after releasing the whole cache) cannot supply them; DriverError.
  std::vector<Chunk> acquire(const std::vector<std::size_t>& sizes);

  // Returns chunks (unmapped) to the cache, then trims the cache to its limit.
  void give_back(const std::vector<Chunk>& chunks);
  // Returns chunks (unmapped) to the cache without trimming: accounting only,
  // no driver call, so callers may hold their own lock (the reclaimer does,
  // to keep its pending bytes and the pool's counters in step). Shared
  // chunks count as cached until the next trim releases them.
  void return_to_cache(const std::vector<Chunk>& chunks);

  // Releases acquired chunks (unmapped) to the device now, past the cache:
  // sleep hands the memory to anyone who wants it. A chunk whose release
  // fails is cached instead (a later trim retries it).
  void release_now(const std::vector<Chunk>& chunks);

  // Releases every shared chunk given back, then cached chunks until at most
  // `target_cached_bytes` stay cached. Returns the bytes released.
  std::size_t trim(std::size_t target_cached_bytes);

  // Sets the memory cap at run time (0: none): what acquire() may have
  // created from now on. Cached chunks above a lower cap are released now;
  // chunks in use are not touched (acquires fail until enough are given
  // back). Returns the bytes released.
  std::size_t set_memory_cap(std::size_t bytes);

  PoolStats stats() const;
  // How many chunks of each class (chunk_classes() order) are cached now.
  std::vector<std::size_t> cached_counts() const;
  const std::vector<std::size_t>& chunk_classes() const noexcept { return classes_; }
  std::size_t granularity() const noexcept { return granularity_; }
  std::size_t cache_limit() const noexcept { return cache_limit_; }

 private:
  int class_index(std::size_t bytes) const;
  // Takes chunks off the free lists (largest first) until at least `bytes`
  // are taken or the cache is empty; the caller releases them. Lock held.
  std::vector<Chunk> take_cached_locked(std::size_t bytes);
  // Takes every shared chunk given back; the caller releases them. Lock held.
  std::vector<Chunk> take_retired_locked();
  // Releases `chunks`; one whose release fails goes back to the cache (a
  // shared one to the retired list) and a later trim retries it.
  void release_chunks(const std::vector<Chunk>& chunks);

  Backend& backend_;
  std::vector<std::size_t> classes_;
  std::size_t granularity_;
  std::size_t cache_limit_;
  std::size_t cap_bytes_;

  mutable std::mutex mutex_;
  std::vector<std::vector<PhysicalHandle>> free_;  // per class, LIFO
  std::vector<Chunk> retired_;                     // shared chunks given back, to be released
  std::uint64_t next_serial_ = 0;
  PoolStats stats_;
};

}  // namespace vmm
