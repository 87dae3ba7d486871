// vmm_replay's devices and memory meter: see replay_devices.hpp.
#include "tools/replay_devices.hpp"

#include <dlfcn.h>

#include <cstring>
#include <exception>
#include <stdexcept>

namespace vmm_replay {

namespace {

template <typename F>
void get(void* lib, F& fn, const char* name) {
  void* p = dlsym(lib, name);
  if (p == nullptr) throw std::runtime_error(std::string("libcuda.so.1 lacks ") + name);
  fn = reinterpret_cast<F>(p);
}

}  // namespace

CudaExtras CudaExtras::load() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) throw std::runtime_error(std::string("dlopen libcuda.so.1: ") + dlerror());
  CudaExtras x;
  get(lib, x.stream_create, "cuStreamCreate");
  get(lib, x.stream_synchronize, "cuStreamSynchronize");
  get(lib, x.stream_destroy, "cuStreamDestroy_v2");
  get(lib, x.memset_d8_async, "cuMemsetD8Async");
  get(lib, x.device_get_name, "cuDeviceGetName");
  return x;  // the library stays open for the process's lifetime
}

// ------------------------------------------------------------ DeviceMeter

DeviceMeter::~DeviceMeter() {
  try {
    stop();
  } catch (const std::exception&) {
    // Only on an error path (stop() is called explicitly otherwise).
  }
}

std::size_t DeviceMeter::read() const {
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  vmm::cuda::check(driver_.MemGetInfo(&free_bytes, &total_bytes), "cuMemGetInfo");
  return total_bytes - free_bytes;
}

void DeviceMeter::start(int hz) {
  peak_.store(read());
  if (hz <= 0) return;
  stop_.store(false);
  thread_ = std::thread([this, hz] {
    try {
      vmm::cuda::check(driver_.CtxSetCurrent(context_), "cuCtxSetCurrent");
      const auto period = std::chrono::nanoseconds(1'000'000'000LL / hz);
      auto next = std::chrono::steady_clock::now();
      while (!stop_.load(std::memory_order_relaxed)) {
        fold(read());
        samples_.fetch_add(1, std::memory_order_relaxed);
        next += period;
        std::this_thread::sleep_until(next);
      }
    } catch (const std::exception& e) {
      std::lock_guard lock(error_mutex_);
      error_ = e.what();
    }
  });
  started_ = std::chrono::steady_clock::now();
}

void DeviceMeter::stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  thread_.join();
  elapsed_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  std::lock_guard lock(error_mutex_);
  if (!error_.empty()) throw std::runtime_error("memory sampler: " + error_);
}

double DeviceMeter::sample_rate_hz() const {
  return elapsed_s_ > 0 ? static_cast<double>(samples_.load()) / elapsed_s_ : 0;
}

void DeviceMeter::fold(std::size_t used) {
  std::size_t p = peak_.load(std::memory_order_relaxed);
  while (used > p && !peak_.compare_exchange_weak(p, used, std::memory_order_relaxed)) {
  }
}

// ------------------------------------------------------------ CudaDevice

CudaDevice::~CudaDevice() {
  for (vmm::Stream s : streams_) x_.stream_destroy(reinterpret_cast<CUstream>(s));
}

vmm::Stream CudaDevice::make_stream() {
  CUstream s = nullptr;
  vmm::cuda::check(x_.stream_create(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  streams_.push_back(reinterpret_cast<vmm::Stream>(s));
  return streams_.back();
}

void CudaDevice::touch(vmm::Stream s, void* p, std::size_t bytes, std::uint8_t value) {
  vmm::cuda::check(x_.memset_d8_async(reinterpret_cast<CUdeviceptr>(p), value, bytes,
                                      reinterpret_cast<CUstream>(s)),
                   "cuMemsetD8Async");
}

void CudaDevice::verify(vmm::Stream, const void*, std::size_t, std::uint8_t) {
  throw std::logic_error("--verify needs the host backend");
}

void CudaDevice::synchronize(vmm::Stream s) {
  vmm::cuda::check(x_.stream_synchronize(reinterpret_cast<CUstream>(s)), "cuStreamSynchronize");
}

// ------------------------------------------------------------ HostDevice

void HostDevice::touch(vmm::Stream s, void* p, std::size_t bytes, std::uint8_t value) {
  streams_->enqueue(s, [=] { std::memset(p, value, bytes); });
}

void HostDevice::verify(vmm::Stream s, const void* p, std::size_t bytes, std::uint8_t value) {
  auto counter = mismatches_;
  streams_->enqueue(s, [=] {
    const auto* b = static_cast<const std::uint8_t*>(p);
    std::uint64_t bad = 0;
    for (std::size_t i = 0; i < bytes; ++i) bad += b[i] != value;
    counter->fetch_add(bad, std::memory_order_relaxed);
  });
}

}  // namespace vmm_replay
