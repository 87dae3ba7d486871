// Interposer: what the LD_PRELOAD hooks forward to. It turns CUDA's
// allocation calls into vmmalloc calls (vmm::Allocator of the shared
// libvmmalloc.so: one allocator state per process, shared with any direct
// use of vmmalloc) and keeps what the translation needs: which blocks it
// handed out, which streams the program has, which devices it serves.
// All allocation logic stays in the library.
//
// What is guaranteed (docs/preload.md has the whole story):
//   - cudaFree / cuMemFree of a block it handed out (cudafree:fence, the
//     default) returns at once; the block goes to no other work until the
//     work queued before the free on the legacy stream (which covers every
//     blocking stream) and on every non-blocking stream of the block's
//     device has completed: the block is marked as used on all of them,
//     and vmmalloc reuses it only after fences recorded on them after the
//     free complete. cudafree:sync synchronizes the device first, as CUDA.
//   - Stream-ordered frees (cudaFreeAsync, cuMemFreeAsync) free in the
//     stream's order, as CUDA's pools do.
//   - Everything not its own is forwarded untouched: pointers it did not
//     hand out, calls in a context other than a device's primary context,
//     per-thread default streams, streams being captured, devices vmmalloc
//     cannot serve, a process whose VMMALLOC_CONF is invalid, a forked child.
//
// Nothing happens until a CUDA call reaches a hook: a process that never
// uses CUDA never creates the interposer (it is inert).
//
// Thread-safety: every method may be called from any thread; see the
// registries for their locks. Methods marked noexcept never throw.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>

#include <cuda.h>

#include <unordered_map>

#include "preload/block_registry.hpp"
#include "preload/stream_registry.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/vmmalloc.h"

namespace vmm {
class Allocator;
}  // namespace vmm

namespace vmm::preload {

enum class FreeCall : int { cudaFree, cudaFreeAsync, cuMemFree_v2, cuMemFreeAsync, count_ };
const char* alloc_call_name(AllocCall call) noexcept;
const char* free_call_name(FreeCall call) noexcept;

// What the hook does after asking the interposer.
enum class Outcome {
  served,         // done by vmmalloc
  forward,        // call the real function, untouched
  out_of_memory,  // vmmalloc is out of memory (cap or device)
  invalid_value,  // a bad argument vmmalloc refused
};

enum class DeviceState : int {
  unknown,    // not used yet
  serving,    // vmmalloc serves it
  forwarding, // vmmalloc cannot serve it: every call is forwarded
  reset,      // cudaDeviceReset destroyed its context: forwarded from then on
};

// Counters, for print_stats and tests.
struct InterposerReport {
  std::array<std::uint64_t, static_cast<int>(AllocCall::count_)> served_allocations{};
  std::array<std::uint64_t, static_cast<int>(AllocCall::count_)> forwarded_allocations{};
  std::array<std::uint64_t, static_cast<int>(FreeCall::count_)> served_frees{};
  std::array<std::uint64_t, static_cast<int>(FreeCall::count_)> forwarded_frees{};
  std::uint64_t served_bytes = 0;
  std::uint64_t invalid_frees = 0;         // forwarded frees CUDA refused (double free, bad pointer)
  std::uint64_t syncs_avoided = 0;         // cudaFree/cuMemFree that did not wait for the device
  std::uint64_t ordered_frees = 0;         // cudafree:order frees ordered on the GPU (the rest
                                           // of syncs_avoided fell back to fences)
  std::uint64_t frees_kept_in_capture = 0; // stream-ordered frees during a capture, not reused
  std::uint64_t streams_created = 0;
  std::uint64_t device_resets = 0;
  std::array<DeviceState, kMaxDevices> devices{};
};

class Interposer {
 public:
  // The process's interposer, created by the first call that needs it.
  static Interposer& get();
  // The interposer if a hook created it already, else null. Never creates.
  static Interposer* existing() noexcept;
  // True in a child forked from a process whose interposer had started:
  // CUDA cannot be used there, and the interposer forwards every call
  // without touching any state the parent's threads may have held.
  static bool forked_child() noexcept;

  // Whether vmmalloc serves `device`; the first call for a device creates
  // vmmalloc's state for it. False for a device vmmalloc cannot serve
  // (no GPU and the host backend not forced, no VMM support, a bad
  // configuration) and after a cudaDeviceReset of it.
  bool serves(int device) noexcept;

  // A block of `bytes` on `device`, whose primary context the caller
  // checked is current. `stream`: the stream of a stream-ordered allocation
  // (0: legacy), ignored for cudaMalloc/cuMemAlloc. forward when vmmalloc
  // does not serve the device or failed otherwise than out of memory.
  Outcome allocate(AllocCall call, int device, std::size_t bytes, vmm_stream_t stream,
                   void** ptr) noexcept;
  // cudaFree / cuMemFree (see the top for what is guaranteed). forward if
  // `ptr` is not a live block the interposer handed out.
  Outcome free_device_ordered(FreeCall call, void* ptr) noexcept;
  // cudaFreeAsync / cuMemFreeAsync on `stream` (0: legacy). `per_thread`:
  // the stream is a per-thread default stream, which vmmalloc cannot fence
  // from other threads: the free is then device-ordered (without a sync).
  // `capturing`: inside a stream capture CUDA frees when the graph runs,
  // which vmmalloc cannot do: the block is kept (never reused) and a
  // warning is logged.
  Outcome free_stream_ordered(FreeCall call, void* ptr, vmm_stream_t stream, bool per_thread,
                              bool capturing) noexcept;
  // Whether `ptr` is a live block the interposer handed out.
  bool owns(const void* ptr) const noexcept;

  void note_forwarded(AllocCall call) noexcept;
  // A forwarded free; `refused`: CUDA refused it (logged as an invalid free).
  void note_forwarded(FreeCall call, const void* ptr, bool refused, int code) noexcept;

  // A stream was created in `device`'s primary context (device -1: another
  // context: not tracked) with cuStreamCreate flags `flags`.
  void stream_created(vmm_stream_t stream, int device, unsigned int flags) noexcept;
  // The program destroys `stream`; `destroy` is the real cuStreamDestroy.
  // Returns true if the interposer took the destroy over: the stream still
  // owns live vmmalloc blocks (stream-ordered allocations not yet freed),
  // which vmmalloc must be able to fence, so `destroy` runs when the last of
  // them is freed (CUDA's cuStreamDestroy does not wait either). Otherwise the
  // caller destroys it. Either way the legacy stream is first made to wait
  // for the stream's last work, so cudaFree's fences keep covering it.
  using StreamDestroyFn = CUresult (*)(CUstream);
  bool stream_destroying(vmm_stream_t stream, StreamDestroyFn destroy) noexcept;
  // cuDevicePrimaryCtxReset(_v2) of `device` is about to run (cudaDeviceReset
  // reaches it): waits for the device, frees the cudaMalloc/cuMemAlloc
  // blocks handed out there (the reset frees those; stream-ordered ones
  // survive it, as CUDA's do), returns vmmalloc's free memory on it to the
  // device, and forwards every later allocation on it: the reset destroys
  // the streams and events vmmalloc's state refers to.
  void device_resetting(int device) noexcept;

  CudaFreeMode cudafree_mode() const noexcept { return config_.cudafree; }
  InterposerReport report() const;

 private:
  Interposer();
  void count(std::atomic<std::uint64_t>& counter) noexcept {
    counter.fetch_add(1, std::memory_order_relaxed);
  }
  DeviceState start_device(int device) noexcept;
  Allocator* owner_or_report(const BlockInfo& info, void* ptr) noexcept;
  Outcome fence_and_free(Allocator& owner, void* ptr,
                         std::span<const vmm_stream_t> nonblocking) noexcept;
  Outcome free_after_every_stream(const BlockInfo& info, void* ptr) noexcept;
  Outcome free_in_order(const BlockInfo& info, void* ptr) noexcept;
  void revive_stream(vmm_stream_t stream, int device) noexcept;
  void release_stream(vmm_stream_t stream, int device) noexcept;
  void finish_deferred_destroy(vmm_stream_t stream) noexcept;
  static void print_report_at_exit() noexcept;

  Config config_;
  bool config_ok_ = true;
  long pid_ = 0;
  std::mutex start_mutex_;  // serialises start_device
  std::array<std::atomic<DeviceState>, kMaxDevices> devices_{};
  BlockRegistry blocks_;
  StreamRegistry streams_;

  std::array<std::atomic<std::uint64_t>, static_cast<int>(AllocCall::count_)> served_allocations_{};
  std::array<std::atomic<std::uint64_t>, static_cast<int>(AllocCall::count_)> forwarded_allocations_{};
  std::array<std::atomic<std::uint64_t>, static_cast<int>(FreeCall::count_)> served_frees_{};
  std::array<std::atomic<std::uint64_t>, static_cast<int>(FreeCall::count_)> forwarded_frees_{};
  std::atomic<std::uint64_t> served_bytes_{0};
  std::atomic<std::uint64_t> invalid_frees_{0};
  std::atomic<std::uint64_t> syncs_avoided_{0};
  std::atomic<std::uint64_t> ordered_frees_{0};
  std::atomic<std::uint64_t> frees_kept_in_capture_{0};
  std::atomic<std::uint64_t> device_resets_{0};

  // Streams whose destroy waits for their last block (stream_destroying).
  struct DeferredDestroy {
    int device = 0;
    StreamDestroyFn destroy = nullptr;
  };
  std::mutex deferred_mutex_;
  std::unordered_map<vmm_stream_t, DeferredDestroy> deferred_;
  std::atomic<std::size_t> deferred_count_{0};
};

// Marks the calling thread as running a real runtime function for a runtime
// hook: the driver hooks that function reaches decide as usual but do not
// count or report as forwarded what the runtime hook counts already.
class RuntimeForwardScope {
 public:
  RuntimeForwardScope() noexcept { ++depth_; }
  ~RuntimeForwardScope() { --depth_; }
  RuntimeForwardScope(const RuntimeForwardScope&) = delete;
  RuntimeForwardScope& operator=(const RuntimeForwardScope&) = delete;
  static bool active() noexcept { return depth_ > 0; }

 private:
  static thread_local int depth_;
};

// Writes the print_stats summary (stats_report.cpp) to stderr.
void write_report(const InterposerReport& report, const Config& config) noexcept;

}  // namespace vmm::preload
