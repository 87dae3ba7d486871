// The adapter's graph pools: PyTorch's MempoolId routed to vmmalloc's graph
// pools (beginAllocateToPool .. endAllocateToPool, releasePool), the
// torch.cuda.MemPools made over them (createOrIncrefPool, getPoolUseCount,
// setUseOnOOM, setNoSplit), and the checkpoints CUDA-graph trees take of
// them (torch.compile with mode="reduce-overhead";
// torch/_inductor/cudagraph_trees.py):
//
//   getCheckpointState     the pool's live blocks now (vmm::PoolCheckpoint)
//   setCheckpointPoolState frees the pool's live blocks and makes the
//                          checkpoint's live again at the same addresses;
//                          returns the pointers freed and, for those made
//                          live, DataPtrs as allocate() makes them (context ==
//                          pointer, deleter == raw_deleter()), which PyTorch
//                          hands to the tensors still alive or releases (the
//                          block is then freed by raw_delete)
//   checkPoolLiveAllocations  the pool's live blocks are exactly a set
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <unordered_set>
#include <utility>
#include <vector>

#include "errors.hpp"
#include "torch_allocator.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/pool_checkpoint.hpp"

namespace vmmalloc_torch {

namespace {

using c10::cuda::CUDACachingAllocator::AllocatorState;
using c10::cuda::CUDACachingAllocator::CheckpointDelta;

// What getCheckpointState hands PyTorch (opaque to it).
struct PoolState final : AllocatorState {
  c10::DeviceIndex device = 0;
  c10::cuda::MempoolId_t mempool_id{0, 0};
  vmm::PoolCheckpoint checkpoint;
};

}  // namespace

TorchAllocator::Pool& TorchAllocator::pool_locked(c10::DeviceIndex device,
                                                  const MempoolId& mempool_id) {
  Pool& pool = pools_[{device, mempool_id}];
  if (pool.vmm_pool == 0) {
    try {
      pool.vmm_pool = allocator_of(device).create_pool();
    } catch (const vmm::Error& e) {
      pools_.erase({device, mempool_id});
      raise_error("creating a graph pool failed", e);
    } catch (...) {
      pools_.erase({device, mempool_id});
      throw;
    }
  }
  return pool;
}

void TorchAllocator::beginAllocateToPool(c10::DeviceIndex device, MempoolId mempool_id,
                                         std::function<bool(cudaStream_t)> filter) {
  std::lock_guard lock(pools_mutex_);
  Pool& pool = pool_locked(device, mempool_id);
  ++pool.use_count;
  routings_.push_back(Routing{device, mempool_id, pool.vmm_pool, std::move(filter)});
  active_routings_.store(routings_.size(), std::memory_order_release);
}

void TorchAllocator::route_to_pool(int device, cudaStream_t stream) {
  std::lock_guard lock(pools_mutex_);
  for (const Routing& r : routings_) {
    if (r.device != device || !r.filter(stream)) continue;
    for (const BoundStream& b : bound_) {
      if (b.device == device && b.stream == stream) return;  // routed already
    }
    try {
      vmm::Allocator::instance(device).begin_pool(r.vmm_pool, stream);
    } catch (const vmm::Error& e) {
      raise_error("routing a stream to its graph pool failed", e);
    }
    bound_.push_back(BoundStream{device, stream, r.vmm_pool});
    return;
  }
}

void TorchAllocator::end_routing_locked(int device, const MempoolId& mempool_id,
                                        std::uint64_t vmm_pool) {
  const auto before = routings_.size();
  routings_.erase(std::remove_if(routings_.begin(), routings_.end(),
                                 [&](const Routing& r) {
                                   return r.device == device && r.mempool_id == mempool_id;
                                 }),
                  routings_.end());
  active_routings_.store(routings_.size(), std::memory_order_release);
  if (routings_.size() == before) return;
  bound_.erase(std::remove_if(bound_.begin(), bound_.end(),
                              [&](const BoundStream& b) {
                                return b.device == device && b.vmm_pool == vmm_pool;
                              }),
               bound_.end());
  try {
    vmm::Allocator::instance(device).end_pool(vmm_pool);
  } catch (const vmm::Error& e) {
    raise_error("ending a graph pool's allocations failed", e);
  }
}

void TorchAllocator::endAllocateToPool(c10::DeviceIndex device, MempoolId mempool_id) {
  std::lock_guard lock(pools_mutex_);
  auto it = pools_.find({device, mempool_id});
  if (it == pools_.end()) return;
  end_routing_locked(device, mempool_id, it->second.vmm_pool);
}

void TorchAllocator::releasePool(c10::DeviceIndex device, MempoolId mempool_id) {
  std::lock_guard lock(pools_mutex_);
  auto it = pools_.find({device, mempool_id});
  if (it == pools_.end()) return;  // a pool vmmalloc never served
  end_routing_locked(device, mempool_id, it->second.vmm_pool);
  if (--it->second.use_count > 0) return;
  const std::uint64_t vmm_pool = it->second.vmm_pool;
  pools_.erase(it);
  try {
    // Its blocks still live (a graph's outputs) return to general use when freed.
    vmm::Allocator::instance(device).release_pool(vmm_pool);
  } catch (const vmm::Error& e) {
    raise_error("releasing a graph pool failed", e);
  }
}


// ------------------------------------------------------------ MemPool

void TorchAllocator::createOrIncrefPool(c10::DeviceIndex device, MempoolId mempool_id,
                                        c10::cuda::CUDACachingAllocator::CUDAAllocator* allocator) {
  if (allocator != nullptr && allocator != this) {
    throw_error(
        "vmmalloc: torch.cuda.MemPool(allocator=...) is not supported with vmmalloc installed "
        "(its pools map their own memory); use torch.cuda.MemPool() or "
        "vmmalloc.torch.mem_pool(), a vmmalloc pool");
  }
  std::lock_guard lock(pools_mutex_);
  ++pool_locked(device, mempool_id).use_count;
}

void TorchAllocator::createOrIncrefPool(
    c10::DeviceIndex device, MempoolId mempool_id,
    std::shared_ptr<c10::cuda::CUDACachingAllocator::CUDAAllocator> allocator) {
  createOrIncrefPool(device, mempool_id, allocator.get());
}

int TorchAllocator::getPoolUseCount(c10::DeviceIndex device, MempoolId mempool_id) {
  std::lock_guard lock(pools_mutex_);
  auto it = pools_.find({device, mempool_id});
  return it == pools_.end() ? 0 : it->second.use_count;
}

void TorchAllocator::setUseOnOOM(c10::DeviceIndex device, MempoolId mempool_id, bool use_on_oom) {
  // MemPool's destructor switches it off, also after the pool went: nothing to do then.
  if (!use_on_oom && getPoolUseCount(device, mempool_id) == 0) return;
  const std::uint64_t vmm_pool = vmm_pool_of(device, mempool_id, "setUseOnOOM");
  try {
    vmm::Allocator::instance(device).set_pool_use_on_oom(vmm_pool, use_on_oom);
  } catch (const vmm::Error& e) {
    raise_error("setUseOnOOM", e);
  }
}

void TorchAllocator::setNoSplit(c10::DeviceIndex device, MempoolId mempool_id) {
  const std::uint64_t vmm_pool = vmm_pool_of(device, mempool_id, "setNoSplit");
  try {
    vmm::Allocator::instance(device).set_pool_no_split(vmm_pool);
  } catch (const vmm::Error& e) {
    raise_error("setNoSplit", e);
  }
}

// ------------------------------------------------------------ checkpoints

std::uint64_t TorchAllocator::vmm_pool_of(c10::DeviceIndex device, const MempoolId& mempool_id,
                                          const char* what) {
  std::lock_guard lock(pools_mutex_);
  auto it = pools_.find({device, mempool_id});
  if (it == pools_.end()) {
    throw_error(message("vmmalloc: ", what, ": cuda:", device, " has no graph pool (",
                        mempool_id.first, ", ", mempool_id.second,
                        ") (never used for a capture, or released)"));
  }
  return it->second.vmm_pool;
}

std::shared_ptr<AllocatorState> TorchAllocator::getCheckpointState(c10::DeviceIndex device,
                                                                   MempoolId id) {
  const std::uint64_t vmm_pool = vmm_pool_of(device, id, "getCheckpointState");
  auto state = std::make_shared<PoolState>();
  state->device = device;
  state->mempool_id = id;
  try {
    state->checkpoint = vmm::Allocator::instance(device).checkpoint_pool(vmm_pool);
  } catch (const vmm::Error& e) {
    raise_error("getCheckpointState", e);
  }
  return state;
}

CheckpointDelta TorchAllocator::setCheckpointPoolState(c10::DeviceIndex device,
                                                       std::shared_ptr<AllocatorState> pps) {
  const auto state = std::dynamic_pointer_cast<PoolState>(pps);
  if (state == nullptr) {
    throw_error(
        "vmmalloc: setCheckpointPoolState: the state was not made by vmmalloc's "
        "getCheckpointState (a checkpoint from another allocator cannot be restored)");
  }
  if (state->device != device) {
    throw_error(message("vmmalloc: setCheckpointPoolState: the checkpoint is of cuda:",
                        state->device, ", not cuda:", device));
  }
  const std::uint64_t vmm_pool =
      vmm_pool_of(device, state->mempool_id, "setCheckpointPoolState");
  if (vmm_pool != state->checkpoint.pool) {
    throw_error(
        "vmmalloc: setCheckpointPoolState: the checkpoint's graph pool was released (and its "
        "id used again) since it was taken");
  }
  vmm::CheckpointDelta delta;
  try {
    delta = vmm::Allocator::instance(device).restore_pool(state->checkpoint);
  } catch (const vmm::Error& e) {
    raise_error("setCheckpointPoolState", e);
  }
  CheckpointDelta out;
  out.ptrs_freed = std::move(delta.freed);
  out.dataptrs_allocd.reserve(delta.allocated.size());
  for (void* p : delta.allocated) {
    out.dataptrs_allocd.emplace_back(p, p, &TorchAllocator::delete_block,
                                     c10::Device(c10::DeviceType::CUDA, device));
  }
  return out;
}

bool TorchAllocator::checkPoolLiveAllocations(
    c10::DeviceIndex device, MempoolId mempool_id,
    const std::unordered_set<void*>& expected_live_allocations) {
  const std::uint64_t vmm_pool = vmm_pool_of(device, mempool_id, "checkPoolLiveAllocations");
  std::vector<void*> live;
  try {
    live = vmm::Allocator::instance(device).pool_live_blocks(vmm_pool);
  } catch (const vmm::Error& e) {
    raise_error("checkPoolLiveAllocations", e);
  }
  if (live.size() != expected_live_allocations.size()) return false;
  return std::all_of(live.begin(), live.end(),
                     [&](void* p) { return expected_live_allocations.count(p) != 0; });
}

}  // namespace vmmalloc_torch
