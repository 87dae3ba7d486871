// A library that uses the CUDA runtime, for the "runtime loaded RTLD_LOCAL"
// case: the program dlopens it with RTLD_LOCAL (as Python loads extension
// modules, CuPy's among them), so the runtime it links is in its own scope
// only and the interposer's cudaMalloc must find the real one from there.
#include <cuda_runtime_api.h>

#include "vmmalloc/vmmalloc.h"

extern "C" __attribute__((visibility("default"))) int vmm_local_runtime_user_check(void) {
  void* p = nullptr;
  if (cudaMalloc(&p, 4096) != cudaSuccess || p == nullptr) return 1;
  size_t bytes = 0;
  if (vmm_block_size(p, &bytes) != VMM_SUCCESS) return 2;  // not served by vmmalloc
  if (cudaFree(p) != cudaSuccess) return 3;
  const cudaError_t twice = cudaFree(p);
  if (twice != cudaErrorInvalidValue) return 100 + static_cast<int>(twice);  // the runtime's answer to a double free
  return 0;
}
