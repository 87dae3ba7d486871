// Runtime calls and kernels the two-GPU tests need, on a device named by
// ordinal (the test devices of the single-GPU suites only use device 0).
// Kept in a .cu file so the test sources stay plain C++ and never include
// the CUDA runtime headers. Every call throws std::runtime_error naming the
// runtime call that failed.
//
// Each function makes `device` current on the calling thread for its work
// and puts the caller's current device back before returning, so the tests
// can check that vmmalloc itself never depends on the current device.
#pragma once

#include <cstddef>
#include <cstdint>

#include "allocator/backend/backend.hpp"

namespace vmm::test {

int runtime_device_count();
int current_device();
void set_current_device(int device);
// cudaDeviceCanAccessPeer(peer, device): can `peer` access `device`'s memory?
bool runtime_can_access_peer(int device, int peer);
// The device the memory at `ptr` lives on (cudaPointerGetAttributes).
int pointer_device(const void* ptr);

Stream create_stream_on(int device);
void destroy_stream_on(int device, Stream stream);
void synchronize_on(int device, Stream stream);

// Queues on `stream` (of `device`) a kernel that sets [ptr, ptr+bytes) to
// `value`; `ptr` may be memory of another device the kernel's device can
// access.
void fill_on(int device, Stream stream, void* ptr, std::size_t bytes, std::uint8_t value);
// Queues a kernel on `device` that counts bytes of [ptr, ptr+bytes) that
// differ from `value`, waits for `stream` and returns the count.
std::uint64_t mismatches_on(int device, Stream stream, const void* ptr, std::size_t bytes,
                            std::uint8_t value);
// cudaMemcpyPeerAsync on `stream` (of `src_device`), then waits for it.
void copy_peer(void* dst, int dst_device, const void* src, int src_device, std::size_t bytes,
               Stream stream);

}  // namespace vmm::test
