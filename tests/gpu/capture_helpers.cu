// See capture_helpers.hpp. Stateless, over the thread-safe runtime.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "tests/gpu/capture_helpers.hpp"

namespace vmm::test {

std::string break_capture(Stream stream) {
  const cudaError_t err = cudaStreamSynchronize(stream);
  (void)cudaGetLastError();  // the refusal is the point; clear it for later calls
  if (err == cudaSuccess) {
    throw std::runtime_error("cudaStreamSynchronize on a capturing stream succeeded");
  }
  return cudaGetErrorName(err);
}

bool capture_in_progress(Stream stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t err = cudaStreamIsCapturing(stream, &status);
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("cudaStreamIsCapturing failed: ") +
                             cudaGetErrorName(err));
  }
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace vmm::test
