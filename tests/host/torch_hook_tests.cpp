// The C functions PyTorch's pluggable allocator calls for
// vmmalloc.torch.mem_pool() (python/vmmalloc/csrc/pool_allocator.cpp),
// compiled here without PyTorch (they need only vmmalloc's C ABI and the
// CUDA runtime header's types) and run on the host backend: what a free
// with a wrong size, device or stream, a double free and a foreign pointer
// do (docs/reliability.md, misuse table). The same functions are exercised
// through PyTorch itself by tests/python on a GPU.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tests/common/catch.hpp"
#include "vmmalloc/vmmalloc.h"

extern "C" {
void* vmmalloc_torch_pool_malloc(size_t size, int device, cudaStream_t stream);
void vmmalloc_torch_pool_free(void* ptr, size_t size, int device, cudaStream_t stream);
}

namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

vmm_allocator_stats stats() {
  vmm_allocator_stats s{};
  REQUIRE(vmm_get_allocator_stats(0, &s) == VMM_SUCCESS);
  return s;
}

bool holds(const void* p, std::size_t n, unsigned char v) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) {
    if (b[i] != v) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("torch hook: a free with a wrong size, device or stream frees the block by its pointer",
          "[torch_hook][misuse]") {
  // The process-wide state on the host backend, also where a GPU is usable.
  (void)vmm_configure("backend:host,va_reservation_size:8G");
  const vmm_allocator_stats before = stats();

  void* keep = vmmalloc_torch_pool_malloc(3 * MiB, 0, nullptr);
  REQUIRE(keep != nullptr);
  std::memset(keep, 0x6B, 3 * MiB);

  // The hook takes PyTorch's size, device and stream but trusts none of
  // them: the block is freed whole, in its own stream order.
  std::vector<void*> blocks;
  for (int i = 0; i < 4; ++i) {
    void* p = vmmalloc_torch_pool_malloc((i + 1) * MiB, 0, nullptr);
    REQUIRE(p != nullptr);
    std::memset(p, 0x20 + i, (i + 1) * MiB);
    blocks.push_back(p);
  }
  CHECK(stats().active_blocks == before.active_blocks + 5);
  auto* bogus_stream = reinterpret_cast<cudaStream_t>(std::uintptr_t{0x1234});
  vmmalloc_torch_pool_free(blocks[0], 1, 0, nullptr);            // size too small
  vmmalloc_torch_pool_free(blocks[1], 64 * MiB, 0, nullptr);     // size too large
  vmmalloc_torch_pool_free(blocks[2], 3 * MiB, 5, nullptr);      // a device that does not exist
  vmmalloc_torch_pool_free(blocks[3], 4 * MiB, 0, bogus_stream);  // a stream it never saw
  const vmm_allocator_stats freed = stats();
  CHECK(freed.active_blocks == before.active_blocks + 1);
  CHECK(freed.frees == before.frees + 4);
  CHECK(holds(keep, 3 * MiB, 0x6B));  // the other block is untouched

  // Double free and foreign pointers: an error on stderr, nothing changes.
  int on_stack = 0;
  vmmalloc_torch_pool_free(blocks[0], 1 * MiB, 0, nullptr);
  vmmalloc_torch_pool_free(&on_stack, sizeof on_stack, 0, nullptr);
  vmmalloc_torch_pool_free(static_cast<char*>(keep) + 4096, 3 * MiB, 0, nullptr);  // interior
  const vmm_allocator_stats after = stats();
  CHECK(after.active_blocks == freed.active_blocks);
  CHECK(after.frees == freed.frees);
  CHECK(after.allocated_bytes == freed.allocated_bytes);
  CHECK(holds(keep, 3 * MiB, 0x6B));

  // Allocation failures return NULL (PyTorch raises its own OutOfMemoryError).
  CHECK(vmmalloc_torch_pool_malloc(SIZE_MAX, 0, nullptr) == nullptr);
  CHECK(vmmalloc_torch_pool_malloc(MiB, 7, nullptr) == nullptr);
  CHECK(stats().active_blocks == freed.active_blocks);

  vmmalloc_torch_pool_free(keep, 3 * MiB, 0, nullptr);
  CHECK(stats().active_blocks == before.active_blocks);
}
