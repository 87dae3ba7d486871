// Checking a CUDA runtime call in the GPU test helpers (cuda_test_device.cu,
// gpu/gpu_kernels.cu, gpu/multi_gpu_kernels.cu): a failure throws
// std::runtime_error naming the call, the error and its description.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace vmm::test {

inline void cuda_check(cudaError_t err, const char* call) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(call) + " failed: " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

}  // namespace vmm::test
