// gpu_available(): whether the GPU suites can run here - the CUDA driver
// loads (cuda_driver.cpp) and device 0 supports virtual memory management.
// Linked into both test binaries; never links libcuda. Thread-safe: the
// driver table is loaded once and read-only afterwards.
#include <string>

#include "allocator/backend/cuda_driver.hpp"
#include "tests/common/test_device.hpp"

namespace vmm::test {

bool gpu_available(std::string* why) {
  const cuda::LoadResult& loaded = cuda::load();
  if (loaded.driver == nullptr) {
    if (why != nullptr) *why = loaded.error;
    return false;
  }
  const cuda::Driver& d = *loaded.driver;
  CUdevice device = 0;
  int vmm_supported = 0;
  CUresult rc = d.DeviceGet(&device, 0);
  if (rc == CUDA_SUCCESS) {
    rc = d.DeviceGetAttribute(&vmm_supported,
                              CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, device);
  }
  if (rc != CUDA_SUCCESS) {
    if (why != nullptr) *why = "querying device 0 failed: " + cuda::describe(rc);
    return false;
  }
  if (vmm_supported == 0) {
    if (why != nullptr) *why = "device 0 does not support virtual memory management";
    return false;
  }
  return true;
}

}  // namespace vmm::test
