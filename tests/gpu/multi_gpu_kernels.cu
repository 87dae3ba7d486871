// See multi_gpu_kernels.hpp. Thread-safe: the runtime is; each call restores
// the calling thread's current device.
#include <cuda_runtime.h>

#include "tests/common/cuda_check.hpp"
#include "tests/gpu/multi_gpu_kernels.hpp"

namespace vmm::test {
namespace {

// Makes `device` current for a scope and restores the previous one.
class OnDevice {
 public:
  explicit OnDevice(int device) {
    cuda_check(cudaGetDevice(&previous_), "cudaGetDevice");
    cuda_check(cudaSetDevice(device), "cudaSetDevice");
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
  cuda_check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  return n;
}

int current_device() {
  int d = -1;
  cuda_check(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

void set_current_device(int device) { cuda_check(cudaSetDevice(device), "cudaSetDevice"); }

bool runtime_can_access_peer(int device, int peer) {
  int can = 0;
  cuda_check(cudaDeviceCanAccessPeer(&can, peer, device), "cudaDeviceCanAccessPeer");
  return can != 0;
}

int pointer_device(const void* ptr) {
  cudaPointerAttributes attributes{};
  cuda_check(cudaPointerGetAttributes(&attributes, ptr), "cudaPointerGetAttributes");
  return attributes.device;
}

Stream create_stream_on(int device) {
  OnDevice on(device);
  cudaStream_t stream = nullptr;
  cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  return stream;
}

void destroy_stream_on(int device, Stream stream) {
  OnDevice on(device);
  cuda_check(cudaStreamDestroy(stream), "cudaStreamDestroy");
}

void synchronize_on(int device, Stream stream) {
  OnDevice on(device);
  cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

void fill_on(int device, Stream stream, void* ptr, std::size_t bytes, std::uint8_t value) {
  OnDevice on(device);
  fill_kernel<<<kBlocks, kThreads, 0, stream>>>(static_cast<unsigned char*>(ptr), bytes, value);
  cuda_check(cudaGetLastError(), "fill_kernel launch");
}

std::uint64_t mismatches_on(int device, Stream stream, const void* ptr, std::size_t bytes,
                            std::uint8_t value) {
  OnDevice on(device);
  unsigned long long* count = nullptr;
  cuda_check(cudaMallocAsync(&count, sizeof *count, stream), "cudaMallocAsync");
  cuda_check(cudaMemsetAsync(count, 0, sizeof *count, stream), "cudaMemsetAsync");
  count_kernel<<<kBlocks, kThreads, 0, stream>>>(static_cast<const unsigned char*>(ptr), bytes,
                                                 value, count);
  cuda_check(cudaGetLastError(), "count_kernel launch");
  unsigned long long host = 0;
  cuda_check(cudaMemcpyAsync(&host, count, sizeof host, cudaMemcpyDeviceToHost, stream),
        "cudaMemcpyAsync");
  cuda_check(cudaFreeAsync(count, stream), "cudaFreeAsync");
  cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return host;
}

void copy_peer(void* dst, int dst_device, const void* src, int src_device, std::size_t bytes,
               Stream stream) {
  OnDevice on(src_device);
  cuda_check(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, bytes, stream),
        "cudaMemcpyPeerAsync");
  cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
}

}  // namespace vmm::test
