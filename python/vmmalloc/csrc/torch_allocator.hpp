// vmmalloc as PyTorch's CUDA allocator.
//
// TorchAllocator implements c10::cuda::CUDACachingAllocator::CUDAAllocator
// over the process-wide vmm::Allocator of each device: PyTorch's tensors,
// torch.cuda.memory_stats(), empty_cache(), Tensor.record_stream and CUDA
// graph pools all reach vmmalloc. It derives from PyTorch's own
// CUDAPluggableAllocator, which answers every hook of the interface of the
// PyTorch it is compiled against; the hooks vmmalloc serves are overridden
// here (graph pools and their checkpoints in torch_graph_pools.cpp), and the
// few it cannot serve yet (memory history) keep PyTorch's "not supported"
// errors.
//
// Errors: out of memory is thrown as c10::OutOfMemoryError (Python sees
// torch.OutOfMemoryError) with vmmalloc's message; other vmmalloc failures
// as c10::Error. Frees never throw (they run in destructors): a failure is
// printed to stderr.
//
// Locks: the allocation path takes none of its own unless a CUDA graph
// capture (or another pool routing) is under way on some device; then
// pools_mutex_ guards the routing tables. vmmalloc's heap has its own locks.
#pragma once

#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/csrc/cuda/CUDAPluggableAllocator.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "devices.hpp"
#include "vmmalloc/stats.hpp"

namespace vmm {
class Allocator;
class Error;
}  // namespace vmm

namespace vmmalloc_torch {

// The process-wide vmmalloc allocator of `device`, checked on first use to
// serve it with GPU memory (c10::Error otherwise).
vmm::Allocator& allocator_of(int device);
// Throws c10::Error "vmmalloc: <what>: <e's message>".
[[noreturn]] void raise_error(const char* what, const vmm::Error& e);

class TorchAllocator final : public torch::cuda::CUDAPluggableAllocator::CUDAPluggableAllocator {
 public:
  using DeviceStats = c10::cuda::CUDACachingAllocator::DeviceStats;
  using MempoolId = c10::cuda::MempoolId_t;

  TorchAllocator();

  // The process's instance (created on first use, never destroyed).
  static const std::shared_ptr<TorchAllocator>& instance();
  // Makes it PyTorch's current CUDA allocator. Returns false if it already
  // was. Throws c10::Error, saying why, if PyTorch's current allocator has
  // handed out or holds memory: the swap is allowed only before that.
  static bool install();
  static bool installed();

  // The deleter of every block handed out here (DataPtr and raw_deleter).
  static void delete_block(void* ptr) noexcept;

  // ---- c10::Allocator
  c10::DataPtr allocate(size_t nbytes) override;
  c10::DeleterFnPtr raw_deleter() const override;

  // ---- CUDAAllocator
  void* raw_alloc(size_t nbytes) override;
  void* raw_alloc_with_stream(size_t nbytes, cudaStream_t stream) override;
  void raw_delete(void* ptr) override;
  void init(int device_count) override;
  bool initialized() override;
  void setMemoryFraction(double fraction, c10::DeviceIndex device) override;
  // An override where the compiled-against header declares it (PyTorch 2.11).
  double getMemoryFraction(c10::DeviceIndex device);
  // Both spellings PyTorch has used; whichever the compiled-against header
  // declares is the override (the other is unused).
  void emptyCache();
  void emptyCache(MempoolId mempool_id);
  void cacheInfo(c10::DeviceIndex device, size_t* largest_block) override;
  void* getBaseAllocation(void* ptr, size_t* size) override;
  void recordStream(const c10::DataPtr& ptr, c10::cuda::CUDAStream stream) override;
  DeviceStats getDeviceStats(c10::DeviceIndex device) override;
  void resetAccumulatedStats(c10::DeviceIndex device) override;
  void resetPeakStats(c10::DeviceIndex device) override;
  // Both spellings again (include_traces came with PyTorch 2.11).
  c10::cuda::CUDACachingAllocator::SnapshotInfo snapshot(MempoolId mempool_id);
  c10::cuda::CUDACachingAllocator::SnapshotInfo snapshot(MempoolId mempool_id, bool include_traces);
  void beginAllocateToPool(c10::DeviceIndex device, MempoolId mempool_id,
                           std::function<bool(cudaStream_t)> filter) override;
  void endAllocateToPool(c10::DeviceIndex device, MempoolId mempool_id) override;
  void releasePool(c10::DeviceIndex device, MempoolId mempool_id) override;
  // CUDA-graph trees (torch.compile mode="reduce-overhead"): checkpoints of a
  // graph pool over vmm::Allocator::checkpoint_pool / restore_pool
  // (torch_graph_pools.cpp). Declared without `override` so that a PyTorch
  // whose signatures differ still builds (and keeps its own refusal).
  std::shared_ptr<c10::cuda::CUDACachingAllocator::AllocatorState> getCheckpointState(
      c10::DeviceIndex device, MempoolId id);
  c10::cuda::CUDACachingAllocator::CheckpointDelta setCheckpointPoolState(
      c10::DeviceIndex device,
      std::shared_ptr<c10::cuda::CUDACachingAllocator::AllocatorState> pps);
  bool checkPoolLiveAllocations(c10::DeviceIndex device, MempoolId mempool_id,
                                const std::unordered_set<void*>& expected_live_allocations);
  // torch.cuda.MemPool (torch_graph_pools.cpp): each a vmmalloc graph pool.
  // Both spellings of createOrIncrefPool PyTorch has used (raw and shared
  // pointer to a pool's own allocator); whichever the header declares is
  // the override. A pool with an allocator of its own is refused.
  void createOrIncrefPool(c10::DeviceIndex device, MempoolId mempool_id,
                          c10::cuda::CUDACachingAllocator::CUDAAllocator* allocator);
  void createOrIncrefPool(
      c10::DeviceIndex device, MempoolId mempool_id,
      std::shared_ptr<c10::cuda::CUDACachingAllocator::CUDAAllocator> allocator);
  int getPoolUseCount(c10::DeviceIndex device, MempoolId mempool_id);
  void setUseOnOOM(c10::DeviceIndex device, MempoolId mempool_id, bool use_on_oom);
  void setNoSplit(c10::DeviceIndex device, MempoolId mempool_id);
  c10::cuda::CUDACachingAllocator::ShareableHandle shareIpcHandle(void* ptr) override;
  std::shared_ptr<void> getIpcDevPtr(std::string handle) override;
  void attachOutOfMemoryObserver(
      c10::cuda::CUDACachingAllocator::OutOfMemoryObserver observer) override;
  cudaError_t memcpyAsync(void* dst, int dst_device, const void* src, int src_device, size_t count,
                          cudaStream_t stream, bool p2p_enabled) override;
  std::string name() override;

 private:
  // vmmalloc's counters at the last resetAccumulatedStats: those it keeps
  // since start (counts, running byte totals) are reported less these.
  using AccumulatedBase = vmm::AllocatorStats;
  // A graph pool or MemPool of PyTorch (MempoolId) mapped to vmmalloc's (PoolId).
  struct Pool {
    std::uint64_t vmm_pool = 0;
    int use_count = 0;
  };
  // beginAllocateToPool .. endAllocateToPool.
  struct Routing {
    int device;
    MempoolId mempool_id;
    std::uint64_t vmm_pool;
    std::function<bool(cudaStream_t)> filter;
  };
  // A stream handed to vmmalloc's begin_pool for a routing.
  struct BoundStream {
    int device;
    cudaStream_t stream;
    std::uint64_t vmm_pool;
  };

  void* allocate_on(int device, size_t nbytes, cudaStream_t stream);
  // vmmalloc's pool for PyTorch's `mempool_id` on `device`; c10::Error
  // naming `what` if there is none.
  std::uint64_t vmm_pool_of(c10::DeviceIndex device, const MempoolId& mempool_id,
                            const char* what);
  void route_to_pool(int device, cudaStream_t stream);
  void end_routing_locked(int device, const MempoolId& mempool_id, std::uint64_t vmm_pool);
  // pools_[{device, mempool_id}], its vmmalloc pool made on first use.
  Pool& pool_locked(c10::DeviceIndex device, const MempoolId& mempool_id);
  [[noreturn]] void throw_out_of_memory(int device, size_t nbytes, const char* what);

  std::atomic<bool> ready_{false};  // init() ran (PyTorch's lazy CUDA init or install())
  std::atomic<int> device_count_{0};

  std::mutex stats_mutex_;
  std::array<AccumulatedBase, kMaxDevices> accumulated_base_{};

  std::atomic<std::size_t> active_routings_{0};
  std::mutex pools_mutex_;
  std::map<std::pair<int, MempoolId>, Pool> pools_;
  std::vector<Routing> routings_;
  std::vector<BoundStream> bound_;

  std::mutex observers_mutex_;
  std::vector<c10::cuda::CUDACachingAllocator::OutOfMemoryObserver> oom_observers_;
};

}  // namespace vmmalloc_torch
