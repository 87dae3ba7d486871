// bench/workspace_growth's meter of device memory in use: see
// workspace_growth_meter.hpp.
#include "workspace_growth_meter.hpp"

#include <exception>
#include <stdexcept>

namespace vmm::bench::growth {

MemoryMeter::~MemoryMeter() {
  try {
    stop();
  } catch (...) {
    // A sampler failure was already reported by the stop() of the run.
  }
}

std::size_t MemoryMeter::read() {
  const std::size_t used = read_raw();
  fold(used);
  return used;
}

void MemoryMeter::start() {
  stop();
  peak_.store(read_raw());
  samples_.store(0);
  max_gap_ns_.store(0);
  sampler_error_.clear();
  stop_flag_.store(false);
  started_ = Clock::now();
  thread_ = std::thread([this] { sample_loop(); });
}

void MemoryMeter::stop() {
  if (!thread_.joinable()) return;
  stop_flag_.store(true);
  thread_.join();
  stopped_ = Clock::now();
  if (!sampler_error_.empty()) throw std::runtime_error("memory sampler: " + sampler_error_);
}

double MemoryMeter::sample_rate_hz() const {
  const double s = std::chrono::duration<double>(stopped_ - started_).count();
  return s > 0 ? static_cast<double>(samples_.load()) / s : 0.0;
}

std::size_t MemoryMeter::read_raw() const {
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  driver_.check(driver_.mem_get_info(&free_bytes, &total_bytes), "cuMemGetInfo");
  return total_bytes - free_bytes;
}

void MemoryMeter::fold(std::size_t used) {
  std::size_t cur = peak_.load();
  while (used > cur && !peak_.compare_exchange_weak(cur, used)) {
  }
}

void MemoryMeter::sample_loop() {
  try {
    // cuMemGetInfo needs the device's (primary) context current here.
    CUDA_CHECK(cudaSetDevice(device_));
    const auto period = std::chrono::nanoseconds(1'000'000'000LL / sample_hz_);
    auto next = Clock::now();
    auto last = next;
    while (!stop_flag_.load(std::memory_order_relaxed)) {
      fold(read_raw());
      const auto now = Clock::now();
      const auto gap = std::chrono::duration_cast<std::chrono::nanoseconds>(now - last).count();
      if (samples_.fetch_add(1) > 0 && gap > max_gap_ns_.load()) max_gap_ns_.store(gap);
      last = now;
      next += period;
      if (next < now) next = now;  // fell behind: no burst to catch up
      std::this_thread::sleep_until(next);
    }
  } catch (const std::exception& e) {
    sampler_error_ = e.what();
  }
}

}  // namespace vmm::bench::growth
