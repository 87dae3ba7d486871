// HostTestDevice: the TestDevice of the backend-generic suites on
// HostBackend's host streams.
//
// The device owns one HostStreams set and every backend made by
// make_backend() shares it, so a stream from create_stream() works with any
// of those backends (fences recorded on it through the allocator's backend
// see the fill/verify/block work queued here) - as CUDA streams work with
// every allocator on the device. Sharing by shared_ptr also makes lifetimes
// free: the device and its backends may be destroyed in any order.
//
// Work: fill is a memset, verify counts differing bytes into the stream's
// atomic counter, block sleeps. Like kernels, the work touches memory only
// when it runs, so a use-after-unmap faults.
//
// Thread-safety: mutex_ guards the per-stream counter table; counters are
// atomics shared with the queued work (which may run after a lookup).
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "allocator/backend/host_backend.hpp"
#include "tests/common/test_device.hpp"

namespace vmm::test {
namespace {

class HostTestDevice final : public TestDevice {
 public:
  const char* name() const override { return "host"; }

  std::unique_ptr<Backend> make_backend() override {
    HostBackend::Options options;
    options.streams = streams_;
    return std::make_unique<HostBackend>(options);
  }

  Stream create_stream() override { return streams_->create(); }

  void destroy_stream(Stream stream) override {
    streams_->destroy(stream);
    std::lock_guard lock(mutex_);
    mismatches_.erase(stream);
  }

  void fill(Stream stream, void* ptr, std::size_t bytes, std::uint8_t value) override {
    streams_->enqueue(stream, [=] { std::memset(ptr, value, bytes); });
  }

  void verify(Stream stream, const void* ptr, std::size_t bytes, std::uint8_t value) override {
    std::shared_ptr<std::atomic<std::uint64_t>> counter = counter_for(stream);
    streams_->enqueue(stream, [=] {
      const auto* p = static_cast<const std::uint8_t*>(ptr);
      std::uint64_t bad = 0;
      for (std::size_t i = 0; i < bytes; ++i) bad += p[i] != value;
      counter->fetch_add(bad, std::memory_order_relaxed);
    });
  }

  std::uint64_t mismatches(Stream stream) override {
    streams_->synchronize(stream);
    return counter_for(stream)->exchange(0, std::memory_order_relaxed);
  }

  void block(Stream stream, unsigned milliseconds) override {
    streams_->enqueue(
        stream, [=] { std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds)); });
  }

  void synchronize(Stream stream) override { streams_->synchronize(stream); }

 private:
  std::shared_ptr<std::atomic<std::uint64_t>> counter_for(Stream stream) {
    std::lock_guard lock(mutex_);
    auto& counter = mismatches_[stream];
    if (!counter) counter = std::make_shared<std::atomic<std::uint64_t>>(0);
    return counter;
  }

  std::shared_ptr<HostStreams> streams_ = std::make_shared<HostStreams>();
  std::mutex mutex_;
  std::unordered_map<Stream, std::shared_ptr<std::atomic<std::uint64_t>>> mismatches_;
};

}  // namespace

std::unique_ptr<TestDevice> make_host_test_device() { return std::make_unique<HostTestDevice>(); }

}  // namespace vmm::test
