// The two C functions behind vmmalloc.torch.mem_pool(): PyTorch's
// CUDAPluggableAllocator (torch.cuda.memory.CUDAPluggableAllocator) loads
// them by name from this extension and a torch.cuda.MemPool built on it gets
// its segments from them, while PyTorch's caching allocator stays the
// current allocator and caches on top of those segments.
//
// The signatures must match what CUDAPluggableAllocator calls exactly
// (nothing checks them): void* (size_t, int, cudaStream_t) and
// void (void*, size_t, int, cudaStream_t). Allocation failure returns NULL,
// which the MemPool path of PyTorch turns into its own torch.OutOfMemoryError
// after trying to free its cache; these functions never throw.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdio>

#include "devices.hpp"
#include "vmmalloc/vmmalloc.h"

extern "C" {

__attribute__((visibility("default"))) void* vmmalloc_torch_pool_malloc(size_t size, int device,
                                                                         cudaStream_t stream) {
  void* ptr = nullptr;
  const vmm_status st = vmm_malloc(&ptr, size, device, stream);
  if (st == VMM_SUCCESS) {
    vmmalloc_torch::note_device(device);
    return ptr;
  }
  if (st != VMM_ERROR_OUT_OF_MEMORY) {
    // Not a shortage PyTorch could relieve by freeing its cache: say what.
    std::fprintf(stderr, "vmmalloc: mem_pool allocation of %zu bytes on cuda:%d failed: %s\n", size,
                 device, vmm_last_error());
  }
  return nullptr;
}

__attribute__((visibility("default"))) void vmmalloc_torch_pool_free(void* ptr, size_t /*size*/,
                                                                     int /*device*/,
                                                                     cudaStream_t /*stream*/) {
  // In the block's own stream order: PyTorch hands a segment back only once
  // the events of every stream that used it have completed.
  if (vmm_free(ptr, nullptr) != VMM_SUCCESS) {
    std::fprintf(stderr, "vmmalloc: mem_pool free of %p failed: %s\n", ptr, vmm_last_error());
  }
}

}  // extern "C"
