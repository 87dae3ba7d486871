// CudaTestDevice: the TestDevice of the GPU suites. Work is real kernels
// launched with the CUDA runtime (statically linked into the test binary) on
// device 0's primary context, the same context CudaBackend retains - as
// PyTorch's kernels would run over vmmalloc's memory.
//
//   fill    grid-stride store of a byte pattern (16-byte stores where aligned)
//   verify  grid-stride compare, mismatching bytes summed per warp and added
//           to the stream's device counter with one atomicAdd per warp
//   block   one thread spinning on %globaltimer (wall-clock nanoseconds, so
//           it lasts the same under compute-sanitizer)
//
// Every runtime call is checked; a failure throws std::runtime_error naming
// the call, so a kernel fault shows up as a throw from synchronize() or
// mismatches(). All device memory the test device needs (kernel code, the
// counters) is taken in its constructor, so the leak checks of the suites,
// which compare cuMemGetInfo before and after, see only the allocator.
// Nothing here synchronises the whole device (no cudaFree: counters are
// freed stream-ordered).
// Thread-safety: the stream-to-counter table is guarded by a mutex; the
// runtime is thread-safe.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "allocator/backend/cuda_backend.hpp"
#include "tests/common/cuda_check.hpp"
#include "tests/common/test_device.hpp"

namespace vmm::test {
namespace {

#define VMM_TEST_CUDA(expr) ::vmm::test::cuda_check((expr), #expr)

constexpr int kThreads = 256;

// Bytes are handled as `vec` 16-byte words from p (16-byte aligned), then
// `tail` single bytes after them.
__global__ void fill_kernel(unsigned char* p, std::size_t vec, std::size_t tail,
                            unsigned char value) {
  const std::size_t stride = std::size_t{gridDim.x} * blockDim.x;
  const std::size_t first = std::size_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const unsigned int word = 0x01010101u * value;
  const uint4 pattern = make_uint4(word, word, word, word);
  auto* v = reinterpret_cast<uint4*>(p);
  for (std::size_t i = first; i < vec; i += stride) v[i] = pattern;
  unsigned char* rest = p + vec * 16;
  for (std::size_t i = first; i < tail; i += stride) rest[i] = value;
}

__device__ unsigned int mismatched_bytes(unsigned int word, unsigned int pattern) {
  // __vcmpne4 sets each unequal byte to 0xff.
  return __popc(__vcmpne4(word, pattern)) / 8;
}

__global__ void verify_kernel(const unsigned char* p, std::size_t vec, std::size_t tail,
                              unsigned char value, unsigned long long* counter) {
  const std::size_t stride = std::size_t{gridDim.x} * blockDim.x;
  const std::size_t first = std::size_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const unsigned int pattern = 0x01010101u * value;
  unsigned long long bad = 0;
  const auto* v = reinterpret_cast<const uint4*>(p);
  for (std::size_t i = first; i < vec; i += stride) {
    const uint4 w = v[i];
    bad += mismatched_bytes(w.x, pattern) + mismatched_bytes(w.y, pattern) +
           mismatched_bytes(w.z, pattern) + mismatched_bytes(w.w, pattern);
  }
  const unsigned char* rest = p + vec * 16;
  for (std::size_t i = first; i < tail; i += stride) bad += rest[i] != value ? 1 : 0;
  for (int offset = 16; offset > 0; offset /= 2) bad += __shfl_down_sync(0xffffffffu, bad, offset);
  if ((threadIdx.x & 31) == 0 && bad != 0) atomicAdd(counter, bad);
}

__global__ void spin_kernel(unsigned long long nanoseconds) {
  unsigned long long start = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  for (;;) {
    unsigned long long now = 0;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    if (now - start >= nanoseconds) break;
    __nanosleep(1000);
  }
}

class CudaTestDevice final : public TestDevice {
 public:
  CudaTestDevice() {
    VMM_TEST_CUDA(cudaSetDevice(0));  // also initialises the primary context
    VMM_TEST_CUDA(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, 0));
    // Everything that takes device memory happens here, before a test takes
    // its cuMemGetInfo baseline for leak checks: load the kernels now (lazy
    // module loading would otherwise allocate at the first launch) and
    // allocate every stream's mismatch counter up front.
    cudaFuncAttributes attributes{};
    VMM_TEST_CUDA(cudaFuncGetAttributes(&attributes, fill_kernel));
    VMM_TEST_CUDA(cudaFuncGetAttributes(&attributes, verify_kernel));
    VMM_TEST_CUDA(cudaFuncGetAttributes(&attributes, spin_kernel));
    void* counters = nullptr;
    VMM_TEST_CUDA(cudaMallocAsync(&counters, kCounterSlots * sizeof(unsigned long long), 0));
    counters_ = static_cast<unsigned long long*>(counters);
    VMM_TEST_CUDA(cudaMemsetAsync(counters_, 0, kCounterSlots * sizeof(unsigned long long), 0));
    VMM_TEST_CUDA(cudaStreamSynchronize(0));
  }

  ~CudaTestDevice() override {
    // Wait for the streams still alive that use a counter, then free the
    // counters stream-ordered: the device is never synchronised as a whole.
    // Errors are ignored (a faulted context cannot be cleaned up anyway).
    for (const auto& [stream, slot] : slots_) (void)cudaStreamSynchronize(stream);
    (void)cudaFreeAsync(counters_, 0);
  }

  const char* name() const override { return "cuda"; }

  std::unique_ptr<Backend> make_backend() override { return std::make_unique<CudaBackend>(0); }

  Stream create_stream() override {
    cudaStream_t stream = nullptr;
    VMM_TEST_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    return stream;
  }

  // Waits for the stream's work first, as HostStreams::destroy does, so its
  // counter (never reused) is idle before the counters are freed.
  void destroy_stream(Stream stream) override {
    VMM_TEST_CUDA(cudaStreamSynchronize(stream));
    {
      std::lock_guard lock(mutex_);
      slots_.erase(stream);
    }
    VMM_TEST_CUDA(cudaStreamDestroy(stream));
  }

  void fill(Stream stream, void* ptr, std::size_t bytes, std::uint8_t value) override {
    if (bytes == 0) return;
    const auto [vec, tail] = split(ptr, bytes);
    fill_kernel<<<blocks(std::max(vec, tail)), kThreads, 0, stream>>>(
        static_cast<unsigned char*>(ptr), vec, tail, value);
    VMM_TEST_CUDA(cudaGetLastError());
  }

  void verify(Stream stream, const void* ptr, std::size_t bytes, std::uint8_t value) override {
    if (bytes == 0) return;
    unsigned long long* counter = counter_for(stream);
    const auto [vec, tail] = split(ptr, bytes);
    verify_kernel<<<blocks(std::max(vec, tail)), kThreads, 0, stream>>>(
        static_cast<const unsigned char*>(ptr), vec, tail, value, counter);
    VMM_TEST_CUDA(cudaGetLastError());
  }

  std::uint64_t mismatches(Stream stream) override {
    unsigned long long* counter = counter_for(stream);
    unsigned long long host = 0;
    VMM_TEST_CUDA(cudaMemcpyAsync(&host, counter, sizeof host, cudaMemcpyDeviceToHost, stream));
    VMM_TEST_CUDA(cudaStreamSynchronize(stream));
    VMM_TEST_CUDA(cudaMemsetAsync(counter, 0, sizeof *counter, stream));
    return host;
  }

  void block(Stream stream, unsigned milliseconds) override {
    spin_kernel<<<1, 1, 0, stream>>>(1000000ull * milliseconds);
    VMM_TEST_CUDA(cudaGetLastError());
  }

  void synchronize(Stream stream) override { VMM_TEST_CUDA(cudaStreamSynchronize(stream)); }

 private:
  // Counters are never reused: a slot freed by a destroyed stream could
  // still be written by its last kernels otherwise. Tests make few streams.
  static constexpr std::size_t kCounterSlots = 4096;

  struct Split {
    std::size_t vec;
    std::size_t tail;
  };
  static Split split(const void* ptr, std::size_t bytes) {
    if (reinterpret_cast<std::uintptr_t>(ptr) % 16 != 0) return {0, bytes};
    return {bytes / 16, bytes % 16};
  }

  unsigned blocks(std::size_t units) const {
    const std::size_t wanted = (units + kThreads - 1) / kThreads;
    const std::size_t most = static_cast<std::size_t>(sms_) * 8;
    return static_cast<unsigned>(std::clamp<std::size_t>(wanted, 1, most));
  }

  // The stream's counter, zero when first handed out.
  unsigned long long* counter_for(Stream stream) {
    std::lock_guard lock(mutex_);
    auto it = slots_.find(stream);
    if (it == slots_.end()) {
      if (next_slot_ == kCounterSlots) {
        throw std::runtime_error("CudaTestDevice: out of mismatch counters");
      }
      it = slots_.emplace(stream, next_slot_++).first;
    }
    return counters_ + it->second;
  }

  int sms_ = 1;
  unsigned long long* counters_ = nullptr;  // kCounterSlots, zeroed at start
  std::mutex mutex_;
  std::map<Stream, std::size_t> slots_;  // live streams -> counter slot
  std::size_t next_slot_ = 0;
};

}  // namespace

std::unique_ptr<TestDevice> make_cuda_test_device() { return std::make_unique<CudaTestDevice>(); }

}  // namespace vmm::test
