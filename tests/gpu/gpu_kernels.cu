// See gpu_kernels.hpp. Thread-safe: stateless, over the thread-safe runtime.
#include <cuda_runtime.h>

#include "tests/common/cuda_check.hpp"
#include "tests/gpu/gpu_kernels.hpp"

namespace vmm::test {
namespace {

__device__ unsigned long long global_ns() {
  unsigned long long now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  return now;
}

// Every thread samples the clock itself, so blocks need no coordination;
// the pass over the range is completed before the clock is checked again.
__global__ void scribble_kernel(unsigned char* p, std::size_t bytes, unsigned char value,
                                unsigned long long nanoseconds) {
  const unsigned long long start = global_ns();
  const std::size_t stride = std::size_t{gridDim.x} * blockDim.x;
  const std::size_t first = std::size_t{blockIdx.x} * blockDim.x + threadIdx.x;
  do {
    for (std::size_t i = first; i < bytes; i += stride) {
      // volatile: every pass really stores, the compiler may not fold them.
      *static_cast<volatile unsigned char*>(p + i) = value;
    }
  } while (global_ns() - start < nanoseconds);
}

}  // namespace

void launch_scribble(Stream stream, void* ptr, std::size_t bytes, std::uint8_t value,
                     unsigned milliseconds, unsigned blocks) {
  scribble_kernel<<<blocks, 256, 0, stream>>>(static_cast<unsigned char*>(ptr), bytes, value,
                                              1000000ull * milliseconds);
  cuda_check(cudaGetLastError(), "scribble_kernel launch");
}

bool stream_busy(Stream stream) {
  const cudaError_t err = cudaStreamQuery(stream);
  if (err == cudaErrorNotReady) return true;
  cuda_check(err, "cudaStreamQuery");
  return false;
}

void begin_capture(Stream stream) {
  cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
}

void* end_capture(Stream stream) {
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (ended != cudaSuccess) {
    // An invalidated capture also sets the thread's last error: clear it, so
    // the next launch's cudaGetLastError() does not report it again.
    (void)cudaGetLastError();
    cuda_check(ended, "cudaStreamEndCapture");
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  cuda_check(err, "cudaGraphInstantiate");
  return exec;
}

void launch_graph(void* graph_exec, Stream stream) {
  cuda_check(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph_exec), stream), "cudaGraphLaunch");
}

void destroy_graph(void* graph_exec) {
  cuda_check(cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph_exec)), "cudaGraphExecDestroy");
}

}  // namespace vmm::test
