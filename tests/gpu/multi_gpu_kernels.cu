// See multi_gpu_kernels.hpp. Thread-safe: the runtime is; each call restores
// the calling thread's current device.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "tests/gpu/multi_gpu_kernels.hpp"

namespace vmm::test {
namespace {

void check(cudaError_t err, const char* call) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(call) + " failed: " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

// Makes `device` current for a scope and restores the previous one.
class OnDevice {
 public:
  explicit OnDevice(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~OnDevice() { (void)cudaSetDevice(previous_); }
  OnDevice(const OnDevice&) = delete;
  OnDevice& operator=(const OnDevice&) = delete;

 private:
  int previous_ = 0;
};

constexpr int kThreads = 256;
constexpr int kBlocks = 264;  // a couple of waves on an H100/H200

__global__ void fill_kernel(unsigned char* p, std::size_t bytes, unsigned char value) {
  const std::size_t stride = std::size_t{gridDim.x} * blockDim.x;
  for (std::size_t i = std::size_t{blockIdx.x} * blockDim.x + threadIdx.x; i < bytes;
       i += stride) {
    p[i] = value;
  }
}

__global__ void count_kernel(const unsigned char* p, std::size_t bytes, unsigned char value,
                             unsigned long long* count) {
  const std::size_t stride = std::size_t{gridDim.x} * blockDim.x;
  unsigned long long bad = 0;
  for (std::size_t i = std::size_t{blockIdx.x} * blockDim.x + threadIdx.x; i < bytes;
       i += stride) {
    bad += p[i] != value;
  }
  if (bad != 0) atomicAdd(count, bad);
}

}  // namespace

int runtime_device_count() {
  int n = 0;
  check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  return n;
}

int current_device() {
  int d = -1;
  check(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

void set_current_device(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }

bool runtime_can_access_peer(int device, int peer) {
  int can = 0;
  check(cudaDeviceCanAccessPeer(&can, peer, device), "cudaDeviceCanAccessPeer");
  return can != 0;
}

int pointer_device(const void* ptr) {
  cudaPointerAttributes attributes{};
  check(cudaPointerGetAttributes(&attributes, ptr), "cudaPointerGetAttributes");
  return attributes.device;
}

Stream create_stream_on(int device) {
  OnDevice on(device);
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  return stream;
}

void destroy_stream_on(int device, Stream stream) {
  OnDevice on(device);
  check(cudaStreamDestroy(stream), "cudaStreamDestroy");
}

void synchronize_on(int device, Stream stream) {
  OnDevice on(device);
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

void fill_on(int device, Stream stream, void* ptr, std::size_t bytes, std::uint8_t value) {
  OnDevice on(device);
  fill_kernel<<<kBlocks, kThreads, 0, stream>>>(static_cast<unsigned char*>(ptr), bytes, value);
  check(cudaGetLastError(), "fill_kernel launch");
}

std::uint64_t mismatches_on(int device, Stream stream, const void* ptr, std::size_t bytes,
                            std::uint8_t value) {
  OnDevice on(device);
  unsigned long long* count = nullptr;
  check(cudaMallocAsync(&count, sizeof *count, stream), "cudaMallocAsync");
  check(cudaMemsetAsync(count, 0, sizeof *count, stream), "cudaMemsetAsync");
  count_kernel<<<kBlocks, kThreads, 0, stream>>>(static_cast<const unsigned char*>(ptr), bytes,
                                                 value, count);
  check(cudaGetLastError(), "count_kernel launch");
  unsigned long long host = 0;
  check(cudaMemcpyAsync(&host, count, sizeof host, cudaMemcpyDeviceToHost, stream),
        "cudaMemcpyAsync");
  check(cudaFreeAsync(count, stream), "cudaFreeAsync");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return host;
}

void copy_peer(void* dst, int dst_device, const void* src, int src_device, std::size_t bytes,
               Stream stream) {
  OnDevice on(src_device);
  check(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, bytes, stream),
        "cudaMemcpyPeerAsync");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

}  // namespace vmm::test
