// What the backend-generic test suites need from a device besides the
// allocator: a backend to build a DeviceContext on, streams, and work queued
// on those streams (fill, verify, block for a while). HostTestDevice runs the
// work on HostBackend's host streams; CudaTestDevice launches kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "allocator/backend/backend.hpp"

namespace vmm::test {

inline constexpr int kSkipReturnCode = 77;

// True if a CUDA device and driver are usable; otherwise *why says why.
bool gpu_available(std::string* why);

class TestDevice {
 public:
  virtual ~TestDevice() = default;
  virtual const char* name() const = 0;
  // A fresh backend for device 0 (the test owns it).
  virtual std::unique_ptr<Backend> make_backend() = 0;

  virtual Stream create_stream() = 0;
  virtual void destroy_stream(Stream stream) = 0;
  // Queues on `stream`: set `bytes` bytes at `ptr` to `value`.
  virtual void fill(Stream stream, void* ptr, std::size_t bytes, std::uint8_t value) = 0;
  // Queues on `stream`: count bytes at `ptr` that differ from `value` into
  // an internal counter; mismatches() synchronizes `stream` and returns and
  // resets it.
  virtual void verify(Stream stream, const void* ptr, std::size_t bytes, std::uint8_t value) = 0;
  virtual std::uint64_t mismatches(Stream stream) = 0;
  // Queues on `stream` work that blocks it for `milliseconds`.
  virtual void block(Stream stream, unsigned milliseconds) = 0;
  // Waits for everything queued on `stream`.
  virtual void synchronize(Stream stream) = 0;
};

std::unique_ptr<TestDevice> make_host_test_device();
#ifdef VMM_TEST_HAVE_CUDA
std::unique_ptr<TestDevice> make_cuda_test_device();
#endif

}  // namespace vmm::test
