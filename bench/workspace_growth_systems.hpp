// The systems bench/workspace_growth compares: each is one way to hold a
// growing buffer on the GPU (see workspace_growth.cu for what each does and
// what is measured).
//
//   cudamalloc          new cudaMalloc, cudaMemcpyAsync old->new, cudaFree old
//   cudamallocasync     the same with cudaMallocAsync / cudaFreeAsync
//   vmm-naive-2mib      one 2 MiB handle per page: create + map + set access
//   vmmalloc-workspace  vmm::Workspace grown in place with grow_to
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "workspace_growth_cuda.hpp"

namespace vmm::bench::growth {

// One way to hold a growing buffer. allocate() makes the initial size from
// nothing (set-up, not timed as a resize); resize() grows it keeping the
// contents (what is timed); release() frees everything once the work stream
// has drained. Destructors free whatever is still held, without throwing.
class System {
 public:
  virtual ~System() = default;
  virtual const char* name() const = 0;
  virtual void allocate(std::size_t bytes) = 0;
  virtual void resize(std::size_t bytes) = 0;
  virtual void* data() const = 0;
  virtual void release() = 0;
  // Anything worth printing under the table.
  virtual std::string note() const { return {}; }
};

// The names of every system, in the default order of the run.
const std::vector<std::string>& all_systems();

// The system called `name`, working on `stream` of `device`, for a buffer
// of at most `capacity` bytes. Throws std::runtime_error on an unknown name.
std::unique_ptr<System> make_system(const std::string& name, cudaStream_t stream,
                                    const Driver& driver, int device, std::size_t capacity);

}  // namespace vmm::bench::growth
