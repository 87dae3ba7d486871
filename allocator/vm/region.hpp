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
// Sharing (IPC): share() marks the region shared - its chunks, now and
// later, are flagged Chunk::shared, so once they leave the region (shrink,
// release) the pool releases them instead of reusing them: another process
// may still map them. It returns a RegionShare, the handle an exporter keeps
// to read the layout and export the chunks' descriptors; the handle outlives
// the region safely (the region unlinks itself when released or destroyed).
//
// Sleep (docs/sleep.md): a region made under a tag scope carries the tag.
// sleep() waits for the work queued on the null stream and on the streams
// given to record_stream(), and for the fences of pending tail pieces, copies [base, base + size) to pinned host memory
// (offload) or drops it (discard), then unmaps every chunk and releases it
// to the device; the address range and the size stay. wake() maps fresh
// chunks for the size and copies the bytes back. While asleep, grow_to,
// shrink_to and share throw InvalidArgumentError; release works. A shared
// region (IPC) cannot sleep.
//
// Thread-safety: a mutex serialises grow/shrink/release/sleep/wake on one
// region; size() and mapped_bytes() are lock-free reads. Lock order: tagged
// regions -> region share -> region -> reclaimer -> pool -> address space.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "allocator/vm/reclaimer.hpp"
#include "allocator/vm/tagged_regions.hpp"
#include "allocator/vm/transfer.hpp"
#include "vmmalloc/tags.hpp"

namespace vmm {

class DeviceContext;
class Region;

// One mapped chunk of a shared region, as an exporter sends it.
struct SharedChunk {
  std::size_t offset = 0;  // from the region's base
  std::size_t bytes = 0;
  std::uint64_t serial = 0;  // Chunk::serial: the same serial is the same memory
  int fd = -1;               // an exported descriptor the caller owns, or -1
};

// What a shared region holds now.
struct SharedLayout {
  int device = 0;
  std::size_t capacity = 0;
  std::size_t size = 0;
  std::vector<SharedChunk> chunks;  // ascending, back to back from offset 0
};

// An exporter's handle on a shared region (Region::share()). Thread-safe:
// mutex_ guards region_, which the region clears when it is released or
// destroyed; layout() holds it while it reads the region.
class RegionShare {
 public:
  // The region's layout, with a descriptor exported (Backend::export_handle)
  // for each chunk whose serial `wants_fd` selects; the caller closes them.
  // Throws InvalidArgumentError once the region is released or destroyed,
  // and what the export throws (NotSupportedError, DriverError), with every
  // descriptor made so far closed.
  SharedLayout layout(const std::function<bool(std::uint64_t serial)>& wants_fd);

 private:
  friend class Region;
  std::mutex mutex_;
  Region* region_ = nullptr;
};

struct RegionInfo {
  VaRange range;
  std::size_t size = 0;
  std::size_t mapped_bytes = 0;
  std::vector<Mapping> chunks;             // attached, ascending addresses
  std::vector<Reclaimer::Ticket> pending;  // tail entries awaiting their fences
  TagId tag = 0;
  bool asleep = false;  // chunks released; size bytes held on the host (offload) or dropped
  std::size_t asleep_bytes = 0;  // while asleep: the bytes wake maps back from the base
};

class Region final : public SleepingRegion {
 public:
  // Reserves `capacity` bytes (rounded up to the granularity) of address
  // space, tagged `tag` (0: untagged). Throws InvalidArgumentError (0),
  // OutOfMemoryError (no VA).
  Region(DeviceContext& context, std::size_t capacity, TagId tag = current_tag());
  // release(0) if not yet released; never throws.
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  std::uintptr_t base() const noexcept { return range_.base; }
  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }
  std::size_t mapped_bytes() const noexcept { return mapped_.load(std::memory_order_acquire); }
  DeviceContext& context() const noexcept { return context_; }
  TagId tag() const noexcept override { return tag_; }

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

  // See the file comment (region_sleep.cpp). sleep() of a region asleep or
  // released, and wake() of one awake, do nothing (wake(keep_host=false)
  // still frees a kept host buffer). On a throw the region is as before:
  // sleep throws InvalidArgumentError (shared), DriverError, what
  // Backend::alloc_pinned throws; wake throws OutOfMemoryError, DriverError.
  void sleep(SleepMode mode, SleepReport& report) override;
  void wake(bool keep_host, SleepReport& report) override;
  bool asleep() const;
  // Work on `stream` uses the region: sleep() waits for what is queued
  // there (besides the null stream). forget_stream() before destroying it.
  void record_stream(Stream stream);
  void forget_stream(Stream stream) noexcept override;

  // Shares the region with other processes (see the file comment); every
  // call returns the same handle. Throws InvalidArgumentError if released.
  std::shared_ptr<RegionShare> share();

 private:
  friend class RegionShare;
  // release()'s work; idempotent.
  void release_memory(Stream stream);
  // Clears the share handle's pointer to this region (if shared). Takes the
  // share's lock, so it is never called with mutex_ held.
  void unlink_share() noexcept;
  // RegionShare::layout()'s work, under mutex_.
  SharedLayout shared_layout(const std::function<bool(std::uint64_t serial)>& wants_fd);
  void check_usable_locked() const;
  // check_usable_locked(), and InvalidArgumentError while asleep.
  void check_awake_locked() const;
  // Unmaps `all` and releases the chunks; on a failed unmap maps back what
  // was unmapped and rethrows. Part of sleep().
  void unmap_release_locked(const std::vector<Mapping>& all);
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
  std::shared_ptr<RegionShare> share_;  // set once by share(), under mutex_
  const TagId tag_;
  bool asleep_ = false;
  SleepMode sleep_mode_ = SleepMode::offload;
  std::vector<Stream> streams_;  // record_stream()'s, for sleep
  PinnedBuffer host_;  // the bytes of an offloaded sleep; kept across cycles by wake(keep_host)
};

}  // namespace vmm
