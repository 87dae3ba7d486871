// Interposer: see interposer.hpp. The hooks (driver_hooks.cpp,
// runtime_hooks.cpp) decide WHICH calls are vmmalloc's; this file says what
// vmmalloc is asked to do for them.
//
// Allocation keys. vmmalloc hands a block to a stream and lets that stream
// reuse it at once after a free; every other stream waits for fences. A
// cudaMalloc block has no stream: any stream may use it. So cudaMalloc and
// cuMemAlloc blocks are allocated under a key of their own that no
// program work is ever ordered on: CU_STREAM_LEGACY (0x1), a valid handle
// (fences recorded on it go to the legacy stream) that vmmalloc otherwise
// never sees, since the hooks turn it into 0 for stream-ordered calls. A
// cudaFree then marks the block as used on the legacy stream (0) and on every
// non-blocking stream of its device, and frees it in the key's order: the
// next cudaMalloc (same key) may take it only once all of those fences have
// completed, and so may any other stream.
#include "preload/interposer.hpp"

#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <span>
#include <thread>

#include "preload/driver_calls.hpp"
#include "preload/log.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm::preload {
namespace {

const vmm_stream_t kAnyStreamKey = kLegacyStreamHandle;

std::atomic<Interposer*> g_interposer{nullptr};
std::atomic<bool> g_forked_child{false};

// How long cudaDeviceReset waits for vmmalloc's reclaimer to unmap the
// freed memory before letting the reset destroy the events it waits on.
constexpr auto kResetDrainLimit = std::chrono::seconds(5);

bool stream_ordered(AllocCall call) noexcept {
  return call == AllocCall::cudaMallocAsync || call == AllocCall::cuMemAllocAsync;
}

}  // namespace

const char* alloc_call_name(AllocCall call) noexcept {
  switch (call) {
    case AllocCall::cudaMalloc: return "cudaMalloc";
    case AllocCall::cudaMallocAsync: return "cudaMallocAsync";
    case AllocCall::cuMemAlloc_v2: return "cuMemAlloc_v2";
    case AllocCall::cuMemAllocAsync: return "cuMemAllocAsync";
    case AllocCall::count_: break;
  }
  return "?";
}

const char* free_call_name(FreeCall call) noexcept {
  switch (call) {
    case FreeCall::cudaFree: return "cudaFree";
    case FreeCall::cudaFreeAsync: return "cudaFreeAsync";
    case FreeCall::cuMemFree_v2: return "cuMemFree_v2";
    case FreeCall::cuMemFreeAsync: return "cuMemFreeAsync";
    case FreeCall::count_: break;
  }
  return "?";
}

Interposer& Interposer::get() {
  static Interposer* const instance = [] {
    auto* ip = new Interposer();  // never destroyed: hooks may run during exit
    g_interposer.store(ip, std::memory_order_release);
    return ip;
  }();
  return *instance;
}

Interposer* Interposer::existing() noexcept { return g_interposer.load(std::memory_order_acquire); }

bool Interposer::forked_child() noexcept { return g_forked_child.load(std::memory_order_relaxed); }

Interposer::Interposer() : pid_(static_cast<long>(::getpid())) {
  for (auto& d : devices_) d.store(DeviceState::unknown, std::memory_order_relaxed);
  try {
    config_ = Config::from_environment();
  } catch (const ConfigError& e) {
    config_ok_ = false;
    config_ = Config{};
    log(LogLevel::error, "%s; the interposer passes every CUDA call through unchanged", e.what());
  }
  set_log_level(config_.log_level);
  // A child forked from here cannot use CUDA, and the locks of the parent's
  // other threads may be held forever in it: it forwards every call.
  pthread_atfork(nullptr, nullptr, [] { g_forked_child.store(true, std::memory_order_relaxed); });
  if (config_ok_ && config_.print_stats) std::atexit(print_report_at_exit);
}

bool Interposer::serves(int device) noexcept {
  if (device < 0 || device >= kMaxDevices) return false;
  DeviceState state = devices_[static_cast<std::size_t>(device)].load(std::memory_order_acquire);
  if (state == DeviceState::unknown) state = start_device(device);
  return state == DeviceState::serving;
}

DeviceState Interposer::start_device(int device) noexcept {
  std::lock_guard lock(start_mutex_);
  auto& slot = devices_[static_cast<std::size_t>(device)];
  DeviceState state = slot.load(std::memory_order_acquire);
  if (state != DeviceState::unknown) return state;
  state = DeviceState::forwarding;
  if (config_ok_) {
    const char* backend = nullptr;
    if (vmm_backend_name(device, &backend) != VMM_SUCCESS) {
      log(LogLevel::warn, "device %d: vmmalloc cannot serve it (%s); CUDA's allocator serves it",
          device, vmm_last_error());
    } else if (std::strcmp(backend, "cuda") == 0) {
      state = DeviceState::serving;
      log(LogLevel::info, "device %d: vmmalloc serves cudaMalloc, cuMemAlloc and stream-ordered "
          "allocations (cudafree:%s)", device,
          cudafree_mode_name(config_.cudafree));
    } else if (config_.backend == BackendKind::host) {
      // The host backend was asked for: its memory stands in for device memory
      // (tests on machines without a GPU). Kernels cannot use it.
      state = DeviceState::serving;
      log(LogLevel::warn, "device %d: backend:host is set, so CUDA allocation calls get HOST "
          "memory (for tests without a GPU only)", device);
    } else {
      log(LogLevel::info, "device %d: no usable GPU for vmmalloc (backend %s); CUDA's allocator "
          "serves it", device, backend);
    }
  }
  slot.store(state, std::memory_order_release);
  return state;
}

Outcome Interposer::allocate(AllocCall call, int device, std::size_t bytes, vmm_stream_t stream,
                             void** ptr) noexcept {
  if (!serves(device)) return Outcome::forward;
  const vmm_stream_t key = stream_ordered(call) ? stream : kAnyStreamKey;
  void* p = nullptr;
  try {
    p = Allocator::instance(device).allocate(bytes, key);
  } catch (const OutOfMemoryError& e) {
    log(LogLevel::info, "%s of %zu bytes on device %d: %s", alloc_call_name(call), bytes, device,
        e.what());
    return Outcome::out_of_memory;
  } catch (const InvalidArgumentError& e) {
    // A size beyond any device: CUDA reports those as out of memory too.
    log(LogLevel::info, "%s of %zu bytes on device %d: %s", alloc_call_name(call), bytes, device,
        e.what());
    return Outcome::out_of_memory;
  } catch (const std::bad_alloc&) {
    return Outcome::out_of_memory;
  } catch (const std::exception& e) {
    log(LogLevel::warn, "%s of %zu bytes on device %d failed in vmmalloc (%s); passing it to CUDA",
        alloc_call_name(call), bytes, device, e.what());
    return Outcome::forward;
  }
  if (p == nullptr) return Outcome::forward;  // 0 bytes: the hooks never ask for that
  try {
    blocks_.insert(p, BlockInfo{device, call, bytes, stream_ordered(call) ? stream : nullptr});
  } catch (...) {
    try {
      Allocator::instance(device).deallocate(p);
    } catch (...) {
    }
    return Outcome::out_of_memory;  // host memory for the registry
  }
  count(served_allocations_[static_cast<std::size_t>(call)]);
  served_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  *ptr = p;
  return Outcome::served;
}

bool Interposer::owns(const void* ptr) const noexcept {
  try {
    return blocks_.find(ptr).has_value();
  } catch (...) {
    return false;
  }
}

// The block's owner, or null after logging that vmmalloc has no live block
// at `ptr` although the interposer handed it out.
Allocator* Interposer::owner_or_report(const BlockInfo& info, void* ptr) noexcept {
  Allocator* owner = Allocator::owner_of(ptr);
  if (owner == nullptr) {
    log(LogLevel::error, "%p was handed out by %s but vmmalloc has no live block there", ptr,
        alloc_call_name(info.call));
  }
  return owner;
}

// Marks the block as used on the legacy stream and on each of `nonblocking`,
// then frees it in its own order. Called under the stream registry's shared
// lock, so no stream named here is released before the free is stamped.
Outcome Interposer::fence_and_free(Allocator& owner, void* ptr,
                                   std::span<const vmm_stream_t> nonblocking) noexcept {
  try {
    owner.record_stream(ptr, nullptr);  // the legacy stream, and through it every blocking one
    for (vmm_stream_t s : nonblocking) owner.record_stream(ptr, s);
    owner.deallocate(ptr);
  } catch (const std::exception& e) {
    log(LogLevel::error, "freeing %p in vmmalloc failed: %s", ptr, e.what());
    return Outcome::invalid_value;
  }
  return Outcome::served;
}

Outcome Interposer::free_after_every_stream(const BlockInfo& info, void* ptr) noexcept {
  Allocator* owner = owner_or_report(info, ptr);
  if (owner == nullptr) return Outcome::invalid_value;
  Outcome outcome = Outcome::served;
  streams_.with_nonblocking(info.device, [&](std::span<const vmm_stream_t> nonblocking) {
    outcome = fence_and_free(*owner, ptr, nonblocking);
  });
  return outcome;
}

// cudafree:order: the free orders all later GPU work after all earlier work
// (order_all_streams), so the block is reusable at once, in its own
// allocation key's order. Too many non-blocking streams (a barrier would
// cost ~6 driver calls each, per free), one of them capturing (no event may
// be recorded on it or waited for by it), or a failed driver call: the
// fences of free_after_every_stream instead, under the same lock.
constexpr std::size_t kMaxOrderedStreams = 8;

Outcome Interposer::free_in_order(const BlockInfo& info, void* ptr) noexcept {
  Allocator* owner = owner_or_report(info, ptr);
  if (owner == nullptr) return Outcome::invalid_value;
  bool ordered = false;
  Outcome outcome = Outcome::served;
  streams_.with_nonblocking(info.device, [&](std::span<const vmm_stream_t> nonblocking) {
    auto can_order = [&] {
      if (nonblocking.size() > kMaxOrderedStreams) return false;
      for (vmm_stream_t s : nonblocking) {
        if (stream_capturing(s)) return false;
      }
      const CUresult rc = order_all_streams(info.device, nonblocking);  // vmm_stream_t is CUstream
      if (rc != CUDA_SUCCESS) {
        log(LogLevel::debug, "ordering the streams of device %d after a free failed (error %d): "
            "fences instead", info.device, static_cast<int>(rc));
        return false;
      }
      return true;
    };
    if (!can_order()) {
      outcome = fence_and_free(*owner, ptr, nonblocking);
      return;
    }
    ordered = true;
    try {
      owner->deallocate(ptr);  // in its own key's order: every later use follows the free
    } catch (const std::exception& e) {
      log(LogLevel::error, "freeing %p in vmmalloc failed: %s", ptr, e.what());
      outcome = Outcome::invalid_value;
    }
  });
  if (ordered && outcome == Outcome::served) count(ordered_frees_);
  return outcome;
}

Outcome Interposer::free_device_ordered(FreeCall call, void* ptr) noexcept {
  std::optional<BlockInfo> info;
  try {
    info = blocks_.take(ptr);
  } catch (...) {
    return Outcome::forward;
  }
  if (!info) return Outcome::forward;
  Outcome outcome = Outcome::served;
  if (config_.cudafree == CudaFreeMode::sync) {
    // CUDA's own behaviour: everything queued on the device completes first.
    const CUresult rc = synchronize_device(info->device);
    if (rc != CUDA_SUCCESS) {
      log(LogLevel::warn, "%s(%p): synchronizing device %d failed (error %d); freeing after "
          "fences instead", free_call_name(call), ptr, info->device, static_cast<int>(rc));
      outcome = free_after_every_stream(*info, ptr);
    } else {
      try {
        Allocator::instance(info->device).deallocate(ptr);
      } catch (const std::exception& e) {
        log(LogLevel::error, "freeing %p in vmmalloc failed: %s", ptr, e.what());
        outcome = Outcome::invalid_value;
      }
    }
  } else {
    outcome = config_.cudafree == CudaFreeMode::order ? free_in_order(*info, ptr)
                                                      : free_after_every_stream(*info, ptr);
    if (outcome == Outcome::served) count(syncs_avoided_);
  }
  if (outcome == Outcome::served) count(served_frees_[static_cast<std::size_t>(call)]);
  if (info->stream != nullptr) finish_deferred_destroy(info->stream);
  return outcome;
}

Outcome Interposer::free_stream_ordered(FreeCall call, void* ptr, vmm_stream_t stream,
                                        bool per_thread, bool capturing) noexcept {
  std::optional<BlockInfo> info;
  try {
    info = blocks_.take(ptr);
  } catch (...) {
    return Outcome::forward;
  }
  if (!info) return Outcome::forward;
  Outcome outcome = Outcome::served;
  if (capturing) {
    // In a capture, CUDA turns the free into a graph node that frees when
    // the graph runs. vmmalloc cannot free at graph launch; freeing now
    // would hand the memory to other work while the graph may still use it.
    // The block stays allocated: safe, at the cost of the memory.
    if (frees_kept_in_capture_.fetch_add(1, std::memory_order_relaxed) == 0) {
      log(LogLevel::warn, "%s(%p) inside a stream capture: vmmalloc cannot free when the graph "
          "runs, so the block stays allocated (allocate captured memory with the capture's own "
          "stream-ordered allocations to get graph memory nodes)", free_call_name(call), ptr);
    }
  } else if (per_thread) {
    // A per-thread default stream cannot be fenced from other threads: the
    // free waits for the whole device's work instead (no synchronization).
    outcome = free_after_every_stream(*info, ptr);
  } else {
    try {
      Allocator::instance(info->device).deallocate(ptr, stream);
    } catch (const std::exception& e) {
      log(LogLevel::error, "freeing %p in vmmalloc failed: %s", ptr, e.what());
      outcome = Outcome::invalid_value;
    }
  }
  if (outcome == Outcome::served) count(served_frees_[static_cast<std::size_t>(call)]);
  if (info->stream != nullptr) finish_deferred_destroy(info->stream);
  return outcome;
}

thread_local int RuntimeForwardScope::depth_ = 0;

void Interposer::note_forwarded(AllocCall call) noexcept {
  if (RuntimeForwardScope::active()) return;
  count(forwarded_allocations_[static_cast<std::size_t>(call)]);
}

void Interposer::note_forwarded(FreeCall call, const void* ptr, bool refused, int code) noexcept {
  if (RuntimeForwardScope::active()) return;
  count(forwarded_frees_[static_cast<std::size_t>(call)]);
  if (!refused) return;
  count(invalid_frees_);
  log(LogLevel::warn, "%s(%p): not a live block of vmmalloc's or CUDA's (CUDA returned error %d): "
      "a double free or an invalid pointer", free_call_name(call), ptr, code);
}

// ---------------------------------------------------------------- streams

void Interposer::stream_created(vmm_stream_t stream, int device, unsigned int flags) noexcept {
  if (device < 0 || device >= kMaxDevices || stream == nullptr) return;
  try {
    const bool released_before =
        streams_.add(stream, StreamRegistry::Info{device, (flags & CU_STREAM_NON_BLOCKING) != 0});
    const bool serving = devices_[static_cast<std::size_t>(device)].load(
                             std::memory_order_acquire) == DeviceState::serving;
    if (released_before && serving) revive_stream(stream, device);
    if (serving && config_.cudafree == CudaFreeMode::order && (flags & CU_STREAM_NON_BLOCKING)) {
      // Registered first (under the registry's exclusive lock, which waits
      // for any free ordering the streams right now): every later free
      // includes it, and this wait covers every earlier one.
      const CUresult rc = order_new_stream(static_cast<CUstream>(stream), device);
      if (rc != CUDA_SUCCESS) {
        log(LogLevel::error, "new stream %p could not be ordered after earlier frees (error %d): "
            "memory freed before it may be reused by its work too early",
            static_cast<void*>(stream), static_cast<int>(rc));
      }
    }
  } catch (const std::exception& e) {
    // Out of host memory: the stream is not tracked, so cudaFree would not
    // fence it. Say so rather than hide it.
    log(LogLevel::error, "cannot track new stream %p (%s): cudaFree's guarantee no longer "
        "covers it", static_cast<void*>(stream), e.what());
  }
}

void Interposer::revive_stream(vmm_stream_t stream, int device) noexcept {
  // vmmalloc records no fence on a handle given to release_stream "until a
  // new allocation on the same handle" (allocator.hpp): CUDA reused the
  // handle for a new stream, so make that allocation.
  try {
    Allocator& a = Allocator::instance(device);
    a.deallocate(a.allocate(1, stream));
  } catch (const std::exception& e) {
    log(LogLevel::warn, "stream %p reuses a released handle and vmmalloc could not take it back "
        "(%s): memory freed with it in use is reused later than it could be",
        static_cast<void*>(stream), e.what());
  }
}

void Interposer::release_stream(vmm_stream_t stream, int device) noexcept {
  try {
    Allocator::instance(device).release_stream(stream);
  } catch (const std::exception& e) {
    log(LogLevel::warn, "releasing stream %p in vmmalloc failed: %s", static_cast<void*>(stream),
        e.what());
  }
}

bool Interposer::stream_destroying(vmm_stream_t stream, StreamDestroyFn destroy) noexcept {
  bool deferred = false;
  try {
    streams_.remove(stream, [&](const StreamRegistry::Info& info) {
      if (devices_[static_cast<std::size_t>(info.device)].load(std::memory_order_acquire) !=
          DeviceState::serving) {
        return false;
      }
      const CUresult rc = order_legacy_after(stream, info.device);
      if (rc != CUDA_SUCCESS) {
        log(LogLevel::warn, "ordering the legacy stream after destroyed stream %p failed (error "
            "%d): cudaFree's fences may not cover its last work", static_cast<void*>(stream),
            static_cast<int>(rc));
      }
      if (destroy != nullptr && blocks_.any_owned_by(stream)) {
        std::lock_guard lock(deferred_mutex_);
        deferred_[stream] = DeferredDestroy{info.device, destroy};
        deferred_count_.fetch_add(1, std::memory_order_release);
        deferred = true;
        return false;  // released when its last block is freed
      }
      release_stream(stream, info.device);
      return true;
    });
  } catch (const std::exception& e) {
    log(LogLevel::warn, "forgetting stream %p failed: %s", static_cast<void*>(stream), e.what());
  }
  return deferred;
}

void Interposer::finish_deferred_destroy(vmm_stream_t stream) noexcept {
  if (deferred_count_.load(std::memory_order_acquire) == 0) return;
  DeferredDestroy d;
  {
    std::lock_guard lock(deferred_mutex_);
    auto it = deferred_.find(stream);
    if (it == deferred_.end() || blocks_.any_owned_by(stream)) return;
    d = it->second;
    deferred_.erase(it);
    deferred_count_.fetch_sub(1, std::memory_order_release);
  }
  release_stream(stream, d.device);
  const CUresult rc = d.destroy(stream);
  if (rc != CUDA_SUCCESS) {
    log(LogLevel::warn, "the deferred destroy of stream %p failed (error %d)",
        static_cast<void*>(stream), static_cast<int>(rc));
  }
}

// ---------------------------------------------------------------- reset

void Interposer::device_resetting(int device) noexcept {
  if (device < 0 || device >= kMaxDevices) return;
  auto& slot = devices_[static_cast<std::size_t>(device)];
  DeviceState expected = DeviceState::serving;
  if (!slot.compare_exchange_strong(expected, DeviceState::reset, std::memory_order_acq_rel)) {
    return;  // not serving: the reset is CUDA's business alone
  }
  count(device_resets_);
  forget_device_events(device);  // the reset destroys them
  // From here every call on the device is forwarded. The reset destroys the
  // context's streams and events, which vmmalloc's fences are; so first the
  // device finishes its work (the reset would wait for it anyway), then the
  // cudaMalloc/cuMemAlloc blocks handed out there are freed (the reset frees
  // those), and vmmalloc's free memory goes back to the device before the
  // events its reclaimer waits on disappear.
  const CUresult rc = synchronize_device(device);
  if (rc != CUDA_SUCCESS) {
    log(LogLevel::warn, "device %d: synchronizing before cudaDeviceReset failed (error %d)", device,
        static_cast<int>(rc));
  }
  std::size_t freed = 0;
  std::size_t still_reserved = 0;
  try {
    Allocator& a = Allocator::instance(device);
    // cudaDeviceReset destroys cudaMalloc allocations but not stream-ordered
    // ones ("they need to be destroyed explicitly"): those stay live.
    for (auto& [ptr, info] : blocks_.take_if([device](const BlockInfo& b) {
           return b.device == device && !stream_ordered(b.call);
         })) {
      try {
        a.deallocate(ptr);
        ++freed;
      } catch (const std::exception& e) {
        log(LogLevel::warn, "device %d: freeing %p at reset failed: %s", device, ptr, e.what());
      }
    }
    {
      std::lock_guard lock(deferred_mutex_);
      for (auto it = deferred_.begin(); it != deferred_.end();) {
        if (it->second.device != device) {
          ++it;
          continue;
        }
        it = deferred_.erase(it);  // the reset destroys the stream itself
        deferred_count_.fetch_sub(1, std::memory_order_release);
      }
    }
    streams_.remove_device(device);
    a.empty_cache();
    const auto deadline = std::chrono::steady_clock::now() + kResetDrainLimit;
    while (a.stats().pending_bytes != 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    a.empty_cache();  // what the reclaimer unmapped went to the pool's cache
    still_reserved = a.stats().reserved_bytes;
  } catch (const std::exception& e) {
    log(LogLevel::warn, "device %d: returning vmmalloc's memory at cudaDeviceReset failed: %s",
        device, e.what());
  }
  log(LogLevel::info, "device %d: cudaDeviceReset: %zu block(s) freed, %zu bytes still held by "
      "vmmalloc; CUDA's allocator serves the device from now on", device, freed, still_reserved);
}

// ---------------------------------------------------------------- report

InterposerReport Interposer::report() const {
  InterposerReport r;
  for (std::size_t i = 0; i < r.served_allocations.size(); ++i) {
    r.served_allocations[i] = served_allocations_[i].load(std::memory_order_relaxed);
    r.forwarded_allocations[i] = forwarded_allocations_[i].load(std::memory_order_relaxed);
  }
  for (std::size_t i = 0; i < r.served_frees.size(); ++i) {
    r.served_frees[i] = served_frees_[i].load(std::memory_order_relaxed);
    r.forwarded_frees[i] = forwarded_frees_[i].load(std::memory_order_relaxed);
  }
  r.served_bytes = served_bytes_.load(std::memory_order_relaxed);
  r.invalid_frees = invalid_frees_.load(std::memory_order_relaxed);
  r.syncs_avoided = syncs_avoided_.load(std::memory_order_relaxed);
  r.ordered_frees = ordered_frees_.load(std::memory_order_relaxed);
  r.frees_kept_in_capture = frees_kept_in_capture_.load(std::memory_order_relaxed);
  r.streams_created = streams_.created();
  r.device_resets = device_resets_.load(std::memory_order_relaxed);
  for (std::size_t d = 0; d < r.devices.size(); ++d) {
    r.devices[d] = devices_[d].load(std::memory_order_relaxed);
  }
  return r;
}

void Interposer::print_report_at_exit() noexcept {
  Interposer* ip = existing();
  if (ip == nullptr || forked_child() || static_cast<long>(::getpid()) != ip->pid_) return;
  try {
    write_report(ip->report(), ip->config_);
  } catch (...) {
    // Out of host memory at exit: nothing to report with.
  }
}

}  // namespace vmm::preload
