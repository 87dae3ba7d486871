// vmm::Allocator: the general allocator (a caching-allocator replacement).
//
// One per device, process-wide and thread-safe (Allocator::instance), or
// built over an explicit DeviceContext (tests, embedding). Small requests are
// packed into 2 MiB pages by size class; large ones are served best-fit from
// mapped free blocks, split and coalesced; when no mapped free block fits,
// free physical chunks are stitched behind a fresh address range before any
// new physical memory is created.
//
// Streams: a block belongs to the stream it was allocated on. Freed, it is
// reusable on that stream at once; on another stream only once a fence on
// its stream (and on every stream passed to record_stream) has completed.
// Fences are lazy: deallocate() makes no driver call; a fence is recorded
// only when another stream wants the block or its memory is to be unmapped.
// Nothing ever synchronizes the device.
//
// CUDA graphs: allocations made for a capture go to a graph pool
// (begin_pool/end_pool); memory of a pool is never handed to other work
// until release_pool(), since the graph may replay at any time.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "vmmalloc/pool_checkpoint.hpp"
#include "vmmalloc/stats.hpp"
#include "vmmalloc/tags.hpp"
#include "vmmalloc/vmmalloc.h"

namespace vmm {

using Stream = vmm_stream_t;
class DeviceContext;
class Heap;

class VMM_API Allocator {
 public:
  // The process-wide allocator of `device` (-1: the calling thread's current
  // CUDA device, or 0 on the host backend). Created on first use. With an
  // explicit device this is one atomic load once created; -1 asks the driver
  // for the current device under a process-wide lock.
  static Allocator& instance(int device = -1);

  // An allocator over an explicit context (which must outlive it).
  explicit Allocator(DeviceContext& context);
  // Frees every block still live and returns all memory (after the fences of
  // the streams that used it). Never throws.
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // A block of at least `bytes` (aligned to 512 bytes), usable on `stream`.
  // bytes == 0 gives nullptr. Throws OutOfMemoryError (with a message like
  // PyTorch's: request, device capacity, free, held by vmmalloc, largest
  // request that would fit), InvalidArgumentError (size overflow),
  // DriverError. On a throw nothing changed.
  void* allocate(std::size_t bytes, Stream stream = nullptr);
  // Frees a block in the order of its own stream. nullptr is a no-op.
  // Throws UnknownPointerError for a pointer not live in this allocator
  // (double free, foreign pointer); nothing changes then.
  void deallocate(void* ptr);
  // Frees a block in the order of `stream` (work on `stream` may still use
  // it; the block's own stream is recorded as a user as well).
  void deallocate(void* ptr, Stream stream);
  // Marks a live block as used on `stream` too: when freed, it is reused
  // elsewhere only after the work queued on `stream` up to the free is done.
  void record_stream(void* ptr, Stream stream);
  // Call before destroying a stream that blocks were allocated on, freed
  // in the order of, or recorded on: fences are recorded lazily, and
  // recording on a destroyed stream is undefined behaviour in CUDA. Records
  // the stream's last fence now (memory freed on it becomes reusable
  // elsewhere once that fence completes) and never records on it again,
  // until a new allocation on the same handle. Blocks still live on the
  // stream must be freed first. Waits for nothing.
  void release_stream(Stream stream);

  // Unmaps every free chunk (once its fence completes, via the reclaimer)
  // and releases the pool's cache to the device. Waits for nothing.
  // Returns the bytes handed back or queued to be.
  std::size_t empty_cache();

  // Graph pools. Between begin_pool(id, stream) and end_pool(id),
  // allocations on `stream` come from (and frees return to) pool `id`;
  // release_pool(id) gives the pool's memory back to general use once the
  // blocks still live in it are freed.
  PoolId create_pool();
  void begin_pool(PoolId pool, Stream stream);
  void end_pool(PoolId pool);
  void release_pool(PoolId pool);
  // Options of a live graph pool, as torch.cuda.MemPool sets them.
  // set_pool_use_on_oom(pool, true): an allocation outside any pool that
  // finds no memory (the device or memory cap is full, after the usual
  // reclaiming) takes a free block of this pool that fits; freed, the block
  // goes back to the pool. set_pool_no_split(pool): a free block of the
  // pool found for a request is handed out whole (new memory is still cut
  // to the request). A pool that is not a live graph pool:
  // InvalidArgumentError (except set_pool_use_on_oom(pool, false), which
  // then does nothing).
  void set_pool_use_on_oom(PoolId pool, bool on);
  void set_pool_no_split(PoolId pool);

  // Checkpoints of a graph pool (vmmalloc/pool_checkpoint.hpp; what
  // PyTorch's CUDA-graph trees use): the pool's live blocks now. restore_pool() frees every
  // block live in the pool now and makes the checkpoint's live blocks live
  // again at the same addresses and sizes (their bytes are whatever the
  // memory holds); `freed` lists the former, `allocated` the latter (one
  // address may be in both). Refused with InvalidArgumentError, changing
  // nothing: a checkpoint whose blocks are not ascending, disjoint, aligned
  // and non-empty; a pool that is not a live graph pool, is asleep or is
  // being captured into. A checkpointed block no longer in free memory of
  // the pool once its blocks are freed (the layout changed), or any failure
  // after that (a driver error while waiting), leaves the pool's blocks all
  // free and throws. A block freed with work of other streams still queued
  // is waited for (those streams' fences only) before it is handed out.
  PoolCheckpoint checkpoint_pool(PoolId pool) const;
  CheckpointDelta restore_pool(const PoolCheckpoint& checkpoint);
  // The pool's live block addresses, ascending (PyTorch's
  // checkPoolLiveAllocations compares them with the tensors it holds).
  std::vector<void*> pool_live_blocks(PoolId pool) const;

  // Sleep and wake of tagged memory (vmmalloc/tags.hpp, docs/sleep.md).
  // sleep(): for each tag, waits for the work queued on the streams that
  // used its memory, copies its live blocks to pinned host memory (offload;
  // discard copies nothing), then unmaps and releases all its physical
  // memory - live, free and cached alike. Addresses and blocks stay. The
  // tag's workspaces on this device (Workspace::tag()) follow, the same way.
  // wake(): maps new physical memory at the same addresses and copies the
  // bytes back; `keep_host` keeps the pinned host buffer for the next sleep.
  // Tags already asleep (awake) are skipped. Allocating under a sleeping tag
  // throws InvalidArgumentError; frees and record_stream work as usual. On a
  // throw the failing tag is left as it was (OutOfMemoryError from wake:
  // still asleep, host copy intact; any error from sleep: awake, intact -
  // with discard, the contents of blocks released before the failure are
  // undefined, as discard promised). If the tag's workspaces fail to wake
  // after its blocks woke, the blocks stay awake and asleep(tag) stays true
  // until a wake succeeds.
  // (std::vector, not std::span: this header stays C++17, as PyTorch
  // extensions compile.)
  SleepReport sleep(const std::vector<TagId>& tags, SleepMode mode = SleepMode::offload);
  SleepReport wake(const std::vector<TagId>& tags, bool keep_host = false);
  bool asleep(TagId tag) const;
  // Tags graph pool `pool` (0: untags it), as a capture under a tag scope does.
  void tag_pool(PoolId pool, TagId tag);
  // sleep()/wake() on every device vmmalloc has used so far (an allocator is
  // made for a device that has only workspaces).
  static SleepReport sleep_everywhere(const std::vector<TagId>& tags,
                                      SleepMode mode = SleepMode::offload);
  static SleepReport wake_everywhere(const std::vector<TagId>& tags, bool keep_host = false);

  AllocatorStats stats() const;
  void reset_peak_stats();
  // Usable size of a live block. Throws UnknownPointerError.
  std::size_t block_size(const void* ptr) const;
  int device() const noexcept;
  DeviceContext& context() const noexcept;

  // The process-wide allocator (of any device) that handed out the live
  // block starting at `ptr`, or nullptr. Lock-free lookup over the devices.
  static Allocator* owner_of(const void* ptr) noexcept;
  // release_stream(stream) on every process-wide allocator created so far.
  static void release_stream_everywhere(Stream stream);
  // Unmaps free chunks whose fences have completed while the free memory held
  // (free blocks, every thread's cached blocks included, plus the pool's
  // cache) is above the pool's cache limit (missing fences are recorded for
  // a later round). The reclaimer's thread trims on its own, down to the peak
  // of bytes allocated over the last 5 s plus the limit, once the memory held
  // has stayed above that for half a second, taking from the threads' caches
  // only what they left unused for half a second. Returns
  // the bytes queued for unmapping. Waits for nothing.
  std::size_t trim_to_limit();

  // The memory cap of this device at run time (the memory_cap key of
  // docs/configuration.md): the physical memory vmmalloc may create here,
  // 0 for none. Cached chunks above a lower cap are released now; memory in
  // use is not touched (allocations fail with OutOfMemoryError until enough
  // is freed). PyTorch's set_per_process_memory_fraction sets it as a
  // fraction of the device's total memory, 0 <= fraction <= 1 (else
  // InvalidArgumentError), as PyTorch reads it: 1 is no cap, 0 no new device
  // memory at all, others rounded down to the granularity (at least one
  // granule). memory_fraction() is the fraction last set, as PyTorch's
  // get_per_process_memory_fraction answers; after set_memory_cap (or the
  // memory_cap key) it is the cap over the total, 1 without a cap.
  void set_memory_cap(std::size_t bytes);
  std::size_t memory_cap() const;
  void set_memory_fraction(double fraction);
  double memory_fraction() const;

 private:
  void apply_memory_cap(std::size_t bytes);

  std::unique_ptr<Heap> heap_;
  std::atomic<double> fraction_set_{-1.0};  // set_memory_fraction's, or -1
};

}  // namespace vmm
