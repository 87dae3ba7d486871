// Where vmm_replay (tools/replay.cpp) puts its streams and block touches,
// and how it reads the GPU's memory in use:
//   CudaExtras   driver entry points the tool needs beyond vmmalloc's table
//                (streams, memset, the device's name), loaded at run time;
//   DeviceMeter  device memory in use (cuMemGetInfo), read on demand and by
//                a background sampler, folded into one peak;
//   Device       the replay's streams, touches and verification: CudaDevice
//                on the GPU, HostDevice on the host backend's streams.
#pragma once

#include <cuda.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// Internal: the driver table vmmalloc loaded, and the host backend's streams.
#include "allocator/backend/backend.hpp"
#include "allocator/backend/cuda_driver.hpp"
#include "allocator/backend/host_backend.hpp"

namespace vmm_replay {

// Driver entry points the tool needs beyond vmmalloc's table, looked up by
// their exported (versioned) names in libcuda.so.1, which vmmalloc's loader
// has already opened. Their signatures are those of <cuda.h>.
struct CudaExtras {
  CUresult (*stream_create)(CUstream*, unsigned int) = nullptr;      // cuStreamCreate
  CUresult (*stream_synchronize)(CUstream) = nullptr;                // cuStreamSynchronize
  CUresult (*stream_destroy)(CUstream) = nullptr;                    // cuStreamDestroy_v2
  CUresult (*memset_d8_async)(CUdeviceptr, unsigned char, std::size_t, CUstream) = nullptr;
  CUresult (*device_get_name)(char*, int, CUdevice) = nullptr;       // cuDeviceGetName

  // Throws std::runtime_error if libcuda.so.1 or an entry point is missing.
  static CudaExtras load();
};

// Device memory in use (total - free) from cuMemGetInfo, read on demand and
// by a background sampler, folded into one peak.
class DeviceMeter {
 public:
  DeviceMeter(const vmm::cuda::Driver& driver, CUcontext context) : driver_(driver), context_(context) {}
  ~DeviceMeter();
  DeviceMeter(const DeviceMeter&) = delete;
  DeviceMeter& operator=(const DeviceMeter&) = delete;

  std::size_t read() const;
  void sample() { fold(read()); }
  // Starts the sampler at `hz` readings a second (none for hz <= 0).
  void start(int hz);
  // Stops the sampler; throws if it failed.
  void stop();
  std::size_t peak() const { return peak_.load(); }
  double sample_rate_hz() const;

 private:
  void fold(std::size_t used);

  const vmm::cuda::Driver& driver_;
  CUcontext context_;
  std::atomic<std::size_t> peak_{0};
  std::atomic<bool> stop_{false};
  std::atomic<long long> samples_{0};
  std::chrono::steady_clock::time_point started_{};
  double elapsed_s_ = 0;
  std::mutex error_mutex_;
  std::string error_;
  std::thread thread_;
};

// Where the replay's streams and touches go: the GPU or host streams.
class Device {
 public:
  virtual ~Device() = default;
  virtual vmm::Stream make_stream() = 0;
  virtual void touch(vmm::Stream s, void* p, std::size_t bytes, std::uint8_t value) = 0;
  virtual void verify(vmm::Stream s, const void* p, std::size_t bytes, std::uint8_t value) = 0;
  virtual void synchronize(vmm::Stream s) = 0;
  virtual std::uint64_t mismatches() const { return 0; }
};

class CudaDevice final : public Device {
 public:
  explicit CudaDevice(const CudaExtras& x) : x_(x) {}
  ~CudaDevice() override;
  vmm::Stream make_stream() override;
  void touch(vmm::Stream s, void* p, std::size_t bytes, std::uint8_t value) override;
  // --verify needs the host backend: throws std::logic_error.
  void verify(vmm::Stream s, const void* p, std::size_t bytes, std::uint8_t value) override;
  void synchronize(vmm::Stream s) override;

 private:
  const CudaExtras& x_;
  std::vector<vmm::Stream> streams_;
};

class HostDevice final : public Device {
 public:
  explicit HostDevice(std::shared_ptr<vmm::HostStreams> streams) : streams_(std::move(streams)) {}
  vmm::Stream make_stream() override { return streams_->create(); }
  void touch(vmm::Stream s, void* p, std::size_t bytes, std::uint8_t value) override;
  void verify(vmm::Stream s, const void* p, std::size_t bytes, std::uint8_t value) override;
  void synchronize(vmm::Stream s) override { streams_->synchronize(s); }
  std::uint64_t mismatches() const override { return mismatches_->load(); }

 private:
  std::shared_ptr<vmm::HostStreams> streams_;
  std::shared_ptr<std::atomic<std::uint64_t>> mismatches_ = std::make_shared<std::atomic<std::uint64_t>>(0);
};

}  // namespace vmm_replay
