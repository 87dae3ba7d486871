// Fence: shared ownership of one backend fence (a CUevent or host fence).
//
// Copies share the fence; the last copy destroys it. completed() caches a
// positive answer so a fence is queried on the driver at most until it is
// seen complete. Thread-safe: the cached flag is atomic and the backend's
// query/wait are thread-safe.
#pragma once

#include <atomic>
#include <exception>
#include <memory>

#include "allocator/backend/backend.hpp"

namespace vmm {

class Fence {
 public:
  Fence() = default;
  // Records a fence after the work queued so far on `stream`. Throws DriverError.
  static Fence record(Backend& backend, Stream stream) {
    Fence fence;
    fence.state_ = std::make_shared<State>(backend, backend.record_fence(stream));
    return fence;
  }

  explicit operator bool() const noexcept { return state_ != nullptr; }

  // True once the work before the fence has completed; never waits. An empty
  // Fence is complete. Throws DriverError if the query fails.
  bool completed() const {
    if (!state_ || state_->done.load(std::memory_order_acquire)) return true;
    if (!state_->backend.fence_completed(state_->handle)) return false;
    state_->done.store(true, std::memory_order_release);
    return true;
  }

  // True if this fence has been seen complete (or is empty); never queries
  // the driver, so it may say false for a fence that is complete by now.
  bool known_complete() const noexcept {
    return !state_ || state_->done.load(std::memory_order_acquire);
  }

  // Waits for this fence only. Throws DriverError.
  void wait() const {
    try {
      if (completed()) return;
    } catch (const std::exception&) {
      // The query failed; the wait below is the authority.
    }
    state_->backend.wait_fence(state_->handle);
    state_->done.store(true, std::memory_order_release);
  }

 private:
  struct State {
    State(Backend& b, FenceHandle h) : backend(b), handle(h) {}
    ~State() { backend.destroy_fence(handle); }
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    Backend& backend;
    FenceHandle handle;
    std::atomic<bool> done{false};
  };
  std::shared_ptr<State> state_;
};

}  // namespace vmm
