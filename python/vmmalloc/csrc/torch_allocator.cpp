#include "torch_allocator.hpp"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>

#include "errors.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/vmmalloc.h"

namespace vmmalloc_torch {

namespace {

// DeviceStats keeps each statistic for StatType AGGREGATE (index 0, "all" in
// torch.cuda.memory_stats), SMALL_POOL (1, "small_pool") and LARGE_POOL (2,
// "large_pool"). vmmalloc's small and large are its heap's size kinds
// (rounded size below 1 MiB, or not): see getDeviceStats.
constexpr std::size_t kAggregate = 0;
constexpr std::size_t kSmallPool = 1;
constexpr std::size_t kLargePool = 2;

constexpr const char* kIpcUnsupported =
    "vmmalloc: CUDA tensors allocated by vmmalloc cannot be shared with other processes through "
    "torch.multiprocessing: it uses legacy CUDA IPC (cudaIpcGetMemHandle), which does not work "
    "on memory mapped with the CUDA virtual memory API. Share a vmmalloc workspace through "
    "exported file descriptors instead, or keep the tensor in one process";

std::int64_t as_i64(std::uint64_t v) { return static_cast<std::int64_t>(v); }

// One statistic of one StatType: PyTorch's current, peak, allocated (the sum
// of increases since resetAccumulatedStats) and freed (of decreases).
struct Figure {
  std::uint64_t current = 0;
  std::uint64_t peak = 0;
  std::uint64_t allocated = 0;
  std::uint64_t freed = 0;
};

// One statistic for "all", "small_pool" and "large_pool".
struct Split {
  Figure all;
  Figure small;
  Figure large;
};

template <typename StatArray>
void set_stat(StatArray& stat, std::size_t type, const Figure& f) {
  auto& s = stat[type];
  s.current = as_i64(f.current);
  s.peak = as_i64(f.peak);
  s.allocated = as_i64(f.allocated);
  s.freed = as_i64(f.freed);
}

template <typename StatArray>
void set_split(StatArray& stat, const Split& split) {
  set_stat(stat, kAggregate, split.all);
  set_stat(stat, kSmallPool, split.small);
  set_stat(stat, kLargePool, split.large);
}

// vmmalloc keeps its running totals since start: what accumulated since the
// last resetAccumulatedStats is the total less the total then (`b`).
Split bytes_of(const vmm::AllocatorStats& s, const vmm::AllocatorStats& b) {
  return {
      {s.allocated_bytes, s.peak_allocated_bytes, s.total_allocated_bytes - b.total_allocated_bytes,
       s.total_freed_bytes - b.total_freed_bytes},
      {s.small_allocated_bytes, s.peak_small_allocated_bytes,
       s.small_total_allocated_bytes - b.small_total_allocated_bytes,
       s.small_total_freed_bytes - b.small_total_freed_bytes},
      {s.large_allocated_bytes, s.peak_large_allocated_bytes,
       s.large_total_allocated_bytes - b.large_total_allocated_bytes,
       s.large_total_freed_bytes - b.large_total_freed_bytes}};
}

Split requested_of(const vmm::AllocatorStats& s, const vmm::AllocatorStats& b) {
  return {
      {s.requested_bytes, s.peak_requested_bytes, s.total_requested_bytes - b.total_requested_bytes,
       s.total_freed_requested_bytes - b.total_freed_requested_bytes},
      {s.small_requested_bytes, s.peak_small_requested_bytes,
       s.small_total_requested_bytes - b.small_total_requested_bytes,
       s.small_total_freed_requested_bytes - b.small_total_freed_requested_bytes},
      {s.large_requested_bytes, s.peak_large_requested_bytes,
       s.large_total_requested_bytes - b.large_total_requested_bytes,
       s.large_total_freed_requested_bytes - b.large_total_freed_requested_bytes}};
}

Split blocks_of(const vmm::AllocatorStats& s, const vmm::AllocatorStats& b) {
  return {{s.active_blocks, s.peak_active_blocks, s.allocations - b.allocations, s.frees - b.frees},
          {s.small_active_blocks, s.peak_small_active_blocks,
           s.small_allocations - b.small_allocations, s.small_frees - b.small_frees},
          {s.large_active_blocks, s.peak_large_active_blocks,
           s.large_allocations - b.large_allocations, s.large_frees - b.large_frees}};
}

}  // namespace

// The process-wide vmmalloc allocator of `device`. The first time a device
// is used here, checks that vmmalloc serves it with GPU memory: its host
// backend (VMMALLOC_CONF backend:host) gives pointers no kernel can use.
vmm::Allocator& allocator_of(int device) {
  vmm::Allocator& a = vmm::Allocator::instance(device);
  if (!device_noted(device)) {
    const char* backend = nullptr;
    if (vmm_backend_name(device, &backend) == VMM_SUCCESS && std::strcmp(backend, "cuda") != 0) {
      throw_error(message("vmmalloc serves cuda:", device, " from its '", backend,
                          "' backend (host memory), which PyTorch's kernels cannot use; remove "
                          "backend:host from VMMALLOC_CONF"));
    }
    note_device(device);
  }
  return a;
}

[[noreturn]] void raise_error(const char* what, const vmm::Error& e) {
  throw_error(message("vmmalloc: ", what, ": ", e.what()));
}

TorchAllocator::TorchAllocator()
    : CUDAPluggableAllocator(
          // PyTorch's pluggable machinery is never handed these (allocate,
          // raw_alloc and raw_delete are overridden); they are what it asks for.
          [this](size_t nbytes, int device, cudaStream_t stream) {
            return allocate_on(device, nbytes, stream);
          },
          [](void* ptr, size_t, int, cudaStream_t) { delete_block(ptr); }) {}

const std::shared_ptr<TorchAllocator>& TorchAllocator::instance() {
  // Never destroyed: PyTorch may free tensors (and call this allocator)
  // during interpreter shutdown, after static destructors have run.
  static const auto* self = new std::shared_ptr<TorchAllocator>(std::make_shared<TorchAllocator>());
  return *self;
}

bool TorchAllocator::installed() {
  return c10::cuda::CUDACachingAllocator::allocator.load() == instance().get();
}

bool TorchAllocator::install() {
  const std::shared_ptr<TorchAllocator>& self = instance();
  c10::cuda::CUDACachingAllocator::CUDAAllocator* current =
      c10::cuda::CUDACachingAllocator::allocator.load();
  if (current == self.get()) return false;
  if (current == nullptr || !current->initialized()) {
    // PyTorch's CUDA state is not up yet: PyTorch's own way (it calls init()
    // at its lazy CUDA initialisation).
    torch::cuda::CUDAPluggableAllocator::changeCurrentAllocator(
        std::shared_ptr<c10::cuda::CUDACachingAllocator::CUDAAllocator>(self));
    return true;
  }
  // CUDA is initialised (torch.cuda.init(), set_device, ...): the swap is
  // still safe if the current allocator has handed out nothing and holds
  // nothing, since no block of it can then reach vmmalloc's free.
  const int devices = c10::cuda::device_count();
  for (int d = 0; d < devices; ++d) {
    DeviceStats st;
    try {
      st = current->getDeviceStats(static_cast<c10::DeviceIndex>(d));
    } catch (const c10::Error& e) {
      throw_error(message("vmmalloc.torch.install(): PyTorch's CUDA allocator (", current->name(),
                          ") is already initialised and cannot tell whether it holds memory (",
                          e.what_without_backtrace(),
                          "). Call vmmalloc.torch.install() right after `import torch`, before "
                          "any CUDA tensor is created"));
    }
    const std::int64_t held = st.reserved_bytes[kAggregate].current;
    const std::int64_t live = st.allocation[kAggregate].current;
    if (held != 0 || live != 0) {
      throw_error(message("vmmalloc.torch.install() must run before PyTorch allocates CUDA memory, "
                          "but PyTorch's allocator (",
                          current->name(), ") already holds ", held, " bytes (", live,
                          " live allocations) on cuda:", d,
                          ". Call vmmalloc.torch.install() right after `import torch`, before "
                          "any CUDA tensor is created: memory from one allocator cannot be freed "
                          "by another"));
    }
  }
  self->init(devices);
  c10::cuda::CUDACachingAllocator::allocator.store(self.get());
  return true;
}

void TorchAllocator::delete_block(void* ptr) noexcept {
  if (ptr == nullptr) return;
  if (vmm_free(ptr, nullptr) != VMM_SUCCESS) {
    // A deleter runs in destructors: report, never throw.
    std::fprintf(stderr, "vmmalloc: freeing %p failed: %s\n", ptr, vmm_last_error());
  }
}

// ------------------------------------------------------------ allocation

void* TorchAllocator::allocate_on(int device, size_t nbytes, cudaStream_t stream) {
  if (active_routings_.load(std::memory_order_acquire) != 0) route_to_pool(device, stream);
  try {
    return allocator_of(device).allocate(nbytes, stream);
  } catch (const vmm::OutOfMemoryError& e) {
    throw_out_of_memory(device, nbytes, e.what());
  } catch (const vmm::Error& e) {
    raise_error("allocation failed", e);
  }
}

void TorchAllocator::throw_out_of_memory(int device, size_t nbytes, const char* what) {
  std::vector<c10::cuda::CUDACachingAllocator::OutOfMemoryObserver> observers;
  {
    std::lock_guard lock(observers_mutex_);
    observers = oom_observers_;
  }
  if (!observers.empty()) {
    size_t device_free = 0;
    size_t device_total = 0;
    {
      c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
      if (cudaMemGetInfo(&device_free, &device_total) != cudaSuccess) (void)cudaGetLastError();
    }
    const std::size_t allocated = vmm::Allocator::instance(device).stats().allocated_bytes;
    for (const auto& observer : observers) {
      try {
        observer(device, allocated, device_total, device_free);
      } catch (...) {
        // An observer's failure must not replace the out-of-memory error.
      }
    }
  }
  // The library's message begins with PyTorch's own sentence ("CUDA out of
  // memory. Tried to allocate ..."), which tools match, then vmmalloc's account.
  static_cast<void>(nbytes);
  throw_out_of_memory_error(std::string(what));
}

c10::DataPtr TorchAllocator::allocate(size_t nbytes) {
  const c10::DeviceIndex device = c10::cuda::current_device();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  void* ptr = allocate_on(device, nbytes, stream);
  return {ptr, ptr, &TorchAllocator::delete_block, c10::Device(c10::DeviceType::CUDA, device)};
}

c10::DeleterFnPtr TorchAllocator::raw_deleter() const { return &TorchAllocator::delete_block; }

void* TorchAllocator::raw_alloc(size_t nbytes) {
  const c10::DeviceIndex device = c10::cuda::current_device();
  return allocate_on(device, nbytes, c10::cuda::getCurrentCUDAStream(device).stream());
}

void* TorchAllocator::raw_alloc_with_stream(size_t nbytes, cudaStream_t stream) {
  return allocate_on(c10::cuda::current_device(), nbytes, stream);
}

void TorchAllocator::raw_delete(void* ptr) {
  if (ptr == nullptr) return;
  if (vmm_free(ptr, nullptr) != VMM_SUCCESS) {
    throw_error(message("vmmalloc: raw_delete(", static_cast<const void*>(ptr), "): ",
                        vmm_last_error()));
  }
}

void TorchAllocator::init(int device_count) {
  device_count_.store(device_count);
  ready_.store(true);
}

bool TorchAllocator::initialized() { return ready_.load(); }

// torch.cuda.set_per_process_memory_fraction / get_per_process_memory_fraction:
// vmmalloc's memory cap of that device, at run time (docs/pytorch.md).
void TorchAllocator::setMemoryFraction(double fraction, c10::DeviceIndex device) {
  try {
    vmm::Allocator::instance(device).set_memory_fraction(fraction);
  } catch (const vmm::Error& e) {
    raise_error("set_per_process_memory_fraction", e);
  }
}

double TorchAllocator::getMemoryFraction(c10::DeviceIndex device) {
  try {
    return vmm::Allocator::instance(device).memory_fraction();
  } catch (const vmm::Error& e) {
    raise_error("get_per_process_memory_fraction", e);
  }
}

// ------------------------------------------------------------ cache, info

void TorchAllocator::emptyCache() {
  for (int d : noted_devices()) {
    try {
      vmm::Allocator::instance(d).empty_cache();
    } catch (const vmm::Error& e) {
      raise_error("empty_cache failed", e);
    }
  }
}

void TorchAllocator::emptyCache(MempoolId /*mempool_id*/) {
  // Graph pools' memory is not cached apart: empty the whole cache.
  emptyCache();
}

void TorchAllocator::cacheInfo(c10::DeviceIndex device, size_t* largest_block) {
  // What one allocation could get without waiting: free device memory plus
  // vmmalloc's cached chunks (stitching maps any of them behind one range).
  size_t device_free = 0;
  size_t device_total = 0;
  {
    c10::cuda::CUDAGuard guard(device);
    C10_CUDA_CHECK(cudaMemGetInfo(&device_free, &device_total));
  }
  size_t cached = 0;
  if (device_noted(device)) cached = vmm::Allocator::instance(device).stats().cached_bytes;
  *largest_block = device_free + cached;
}

void* TorchAllocator::getBaseAllocation(void* ptr, size_t* size) {
  size_t bytes = 0;
  if (vmm_block_size(ptr, &bytes) != VMM_SUCCESS) {
    throw_error(message("vmmalloc: getBaseAllocation(", static_cast<const void*>(ptr), "): ",
                        vmm_last_error()));
  }
  if (size != nullptr) *size = bytes;
  return ptr;
}

void TorchAllocator::recordStream(const c10::DataPtr& ptr, c10::cuda::CUDAStream stream) {
  // Only blocks of this allocator: tensors over foreign memory (from_blob,
  // vmmalloc workspaces) have nothing to record.
  if (ptr.get() == nullptr || ptr.get_deleter() != &TorchAllocator::delete_block) return;
  if (stream.device_index() != ptr.device().index()) {
    throw_error(message("vmmalloc: record_stream of a block on cuda:", ptr.device().index(),
                        " with a stream of cuda:", stream.device_index()));
  }
  if (vmm_record_stream(ptr.get(), stream.stream()) != VMM_SUCCESS) {
    throw_error(message("vmmalloc: record_stream(", static_cast<const void*>(ptr.get()), "): ",
                        vmm_last_error()));
  }
}

// ------------------------------------------------------------ statistics

// getDeviceStats gives PyTorch each counter of VMM_ALLOCATOR_STATS
// (include/vmmalloc/stats.hpp) that one of its stats stands for; mapped_bytes,
// cached_bytes, pending_bytes, stitches and fenced_free_waits have none (they
// reach Python through vmmalloc.torch.memory_stats()). A counter added to the
// list fails this check: map it below or name it above, then count it.
static_assert(std::size(vmm::kAllocatorStatFields) == 48,
              "a counter was added to VMM_ALLOCATOR_STATS: does getDeviceStats report it?");

TorchAllocator::DeviceStats TorchAllocator::getDeviceStats(c10::DeviceIndex device) {
  DeviceStats out;
  out.max_split_size = -1;  // vmmalloc has none: PyTorch's default (SIZE_MAX) reads -1
  if (!device_noted(device)) return out;  // vmmalloc never ran there
  const vmm::AllocatorStats s = vmm::Allocator::instance(device).stats();
  AccumulatedBase base;
  {
    std::lock_guard lock(stats_mutex_);
    base = accumulated_base_[static_cast<std::size_t>(device)];
  }
  // Blocks and their bytes, for all, small_pool and large_pool. A block is
  // active from its allocation to its free request in vmmalloc (its reuse
  // waits for the streams that used it, not its accounting), so active and
  // allocation are the same counts, active_bytes and allocated_bytes the
  // same bytes.
  const Split blocks = blocks_of(s, base);
  const Split bytes = bytes_of(s, base);
  set_split(out.allocation, blocks);
  set_split(out.active, blocks);
  set_split(out.allocated_bytes, bytes);
  set_split(out.active_bytes, bytes);
  set_split(out.requested_bytes, requested_of(s, base));
  // Memory held: "all" only. vmmalloc's physical chunks (and its chunk
  // cache and pending unmaps) belong to no size kind, so small_pool and
  // large_pool of these stay 0. A "segment" of PyTorch's is one cudaMalloc;
  // vmmalloc's equivalent is a physical chunk (one cuMemCreate); the peaks
  // of the chunk count and of the split counts are not kept (0).
  set_stat(out.reserved_bytes, kAggregate, {s.reserved_bytes, s.peak_reserved_bytes, 0, 0});
  set_stat(out.inactive_split_bytes, kAggregate, {s.inactive_split_bytes, 0, 0, 0});
  set_stat(out.segment, kAggregate,
           {s.chunk_creates - s.chunk_releases, 0, s.chunk_creates - base.chunk_creates,
            s.chunk_releases - base.chunk_releases});
  // oversize_allocations and oversize_segments stay 0: nothing is oversize
  // without a max_split_size, as in PyTorch by default.
  out.num_ooms = as_i64(s.ooms - base.ooms);
  out.num_alloc_retries = as_i64(s.alloc_retries - base.alloc_retries);
  out.num_device_alloc = as_i64(s.chunk_creates - base.chunk_creates);
  out.num_device_free = as_i64(s.chunk_releases - base.chunk_releases);
  out.num_sync_all_streams = 0;  // vmmalloc never synchronises every stream
  return out;
}

void TorchAllocator::resetAccumulatedStats(c10::DeviceIndex device) {
  if (!device_noted(device)) return;
  const vmm::AllocatorStats s = vmm::Allocator::instance(device).stats();
  std::lock_guard lock(stats_mutex_);
  accumulated_base_[static_cast<std::size_t>(device)] = s;
}

void TorchAllocator::resetPeakStats(c10::DeviceIndex device) {
  if (!device_noted(device)) return;
  vmm::Allocator::instance(device).reset_peak_stats();  // every peak of vmmalloc's
}

c10::cuda::CUDACachingAllocator::SnapshotInfo TorchAllocator::snapshot(MempoolId mempool_id) {
  return snapshot(mempool_id, true);
}

c10::cuda::CUDACachingAllocator::SnapshotInfo TorchAllocator::snapshot(MempoolId /*mempool_id*/,
                                                                        bool /*include_traces*/) {
  throw_error(
      "vmmalloc: torch.cuda.memory_snapshot() and torch.cuda.memory._snapshot() describe "
      "PyTorch's caching allocator and are not available with vmmalloc installed; use "
      "vmmalloc.torch.snapshot() (vmmalloc's own snapshot) or torch.cuda.memory_stats()");
}

// ------------------------------------------------------------ the rest

c10::cuda::CUDACachingAllocator::ShareableHandle TorchAllocator::shareIpcHandle(void* /*ptr*/) {
  throw_error(kIpcUnsupported);
}

std::shared_ptr<void> TorchAllocator::getIpcDevPtr(std::string /*handle*/) {
  throw_error(kIpcUnsupported);
}

void TorchAllocator::attachOutOfMemoryObserver(
    c10::cuda::CUDACachingAllocator::OutOfMemoryObserver observer) {
  std::lock_guard lock(observers_mutex_);
  oom_observers_.push_back(std::move(observer));
}

cudaError_t TorchAllocator::memcpyAsync(void* dst, int dst_device, const void* src, int src_device,
                                        size_t count, cudaStream_t stream, bool /*p2p_enabled*/) {
  // Memory mapped with the VMM API is reachable from another device only
  // where access was granted to it (cudaDeviceEnablePeerAccess does not
  // cover it): across devices, the peer copy always works.
  if (dst_device == src_device) {
    return cudaMemcpyAsync(dst, src, count, cudaMemcpyDeviceToDevice, stream);
  }
  return cudaMemcpyPeerAsync(dst, dst_device, src, src_device, count, stream);
}

std::string TorchAllocator::name() { return "vmmalloc"; }

}  // namespace vmmalloc_torch
