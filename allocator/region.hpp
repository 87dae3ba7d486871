// Region: a virtual address range of fixed capacity with a mapped prefix.
//
// grow_to() maps new chunks at the tail (fewest chunks the classes allow, one
// set-access per contiguous new range): the base never moves, contents stay,
// nothing is copied or waited for. shrink_to() detaches whole tail chunks past
// the new size and hands them to the reclaimer with a fence on the caller's
// stream; they are unmapped only once that fence completes. A grow that
// follows a shrink first takes back those still-pending tail chunks (they are
// still mapped), so a shrink/grow cycle costs no driver call at all.
//
// Memory held: after grow_to(n), exactly align_up(n, granularity) is mapped.
// After shrink_to(n) and its fence, the region holds at most n plus the rest
// of the chunk that contains byte n-1 (chunks are unmapped whole).
//
// Thread-safety: a mutex serialises grow/shrink/release on one region; size()
// and mapped_bytes() are lock-free reads. Lock order: region -> reclaimer ->
// pool -> address space.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "allocator/reclaimer.hpp"

namespace vmm {

class DeviceContext;

struct RegionInfo {
  VaRange range;
  std::size_t size = 0;
  std::size_t mapped_bytes = 0;
  std::vector<Mapping> chunks;            // attached, ascending addresses
  std::vector<Reclaimer::Ticket> pending; // tail entries awaiting their fences
};

class Region {
 public:
  // Reserves `capacity` bytes (rounded up to the granularity) of address
  // space. Throws InvalidArgumentError (0), OutOfMemoryError (no VA).
  Region(DeviceContext& context, std::size_t capacity);
  // release(0) if not yet released; never throws.
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  std::uintptr_t base() const noexcept { return range_.base; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }
  std::size_t mapped_bytes() const noexcept { return mapped_.load(std::memory_order_acquire); }
  DeviceContext& context() const noexcept { return context_; }

  // See the file comment. Throws InvalidArgumentError (n > capacity, or the
  // region was released), OutOfMemoryError, DriverError; on a throw the
  // region is exactly as before.
  void grow_to(std::size_t n);
  // Throws DriverError if the fence cannot be recorded (nothing changed) or
  // InvalidArgumentError if released.
  void shrink_to(std::size_t n, Stream stream);
  // Hands everything (mappings and the address range) to the reclaimer with
  // a fence on `stream`; the region is empty and unusable afterwards.
  void release(Stream stream);

  RegionInfo info() const;

 private:
  void check_usable_locked() const;
  // Re-queues taken-back tail mappings with their own fences.
  void requeue_locked(std::vector<Reclaimer::Cancelled>& groups);

  DeviceContext& context_;
  VaRange range_;
  std::size_t capacity_;
  std::size_t granularity_;

  mutable std::mutex mutex_;
  bool released_ = false;
  std::atomic<std::size_t> size_{0};
  std::atomic<std::size_t> mapped_{0};
  std::vector<Mapping> chunks_;
  std::vector<Reclaimer::Ticket> pending_;
};

}  // namespace vmm
