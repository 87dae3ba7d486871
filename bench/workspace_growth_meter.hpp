// bench/workspace_growth's meter of device memory in use: total - free from
// cuMemGetInfo on the driver, read on demand after every measured operation
// and by a background sampler thread, folding both into one peak.
#pragma once

#include <atomic>
#include <cstddef>
#include <string>
#include <thread>

#include "workspace_growth_cuda.hpp"

namespace vmm::bench::growth {

class MemoryMeter {
 public:
  MemoryMeter(const Driver& driver, int device, int sample_hz)
      : driver_(driver), device_(device), sample_hz_(sample_hz) {}
  ~MemoryMeter();
  MemoryMeter(const MemoryMeter&) = delete;
  MemoryMeter& operator=(const MemoryMeter&) = delete;

  // Reads the driver now (the calling thread needs the device's context
  // current) and folds the reading into the peak.
  std::size_t read();

  // Resets the peak to the current reading and starts the sampler.
  void start();

  // Stops the sampler; throws if it failed.
  void stop();

  std::size_t peak() const { return peak_.load(); }
  double sample_rate_hz() const;
  double max_gap_ms() const { return static_cast<double>(max_gap_ns_.load()) / 1e6; }

 private:
  std::size_t read_raw() const;
  void fold(std::size_t used);
  void sample_loop();

  const Driver& driver_;
  int device_;
  int sample_hz_;
  std::atomic<std::size_t> peak_{0};
  std::atomic<long long> samples_{0};
  std::atomic<long long> max_gap_ns_{0};
  std::atomic<bool> stop_flag_{false};
  std::string sampler_error_;  // written by the sampler, read after join
  std::thread thread_;
  Clock::time_point started_{};
  Clock::time_point stopped_{};
};

}  // namespace vmm::bench::growth
