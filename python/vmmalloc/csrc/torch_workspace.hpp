// A vmm::Workspace whose memory PyTorch tensors can view.
//
// Tensors are made over the workspace's stable base with at::from_blob; each
// holds a reference to the workspace, so the memory outlives every tensor
// viewing it. A grow maps more memory behind the same base and keeps the
// contents, so tensors taken before it stay valid. The workspace is
// released, once the last reference is gone, in the order of its release
// stream (the stream current when it was made): memory the GPU may still
// touch is unmapped only after that stream's queued work is done.
//
// Thread-safety: vmm::Workspace serialises its own calls.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "vmmalloc/workspace.hpp"

namespace vmmalloc_torch {

class TorchWorkspace {
 public:
  // Reserves `capacity` bytes of address space on `device`; maps nothing.
  // Throws vmm::Error (InvalidArgumentError, OutOfMemoryError, DriverError).
  TorchWorkspace(std::size_t capacity, int device, cudaStream_t release_stream);
  ~TorchWorkspace();
  TorchWorkspace(const TorchWorkspace&) = delete;
  TorchWorkspace& operator=(const TorchWorkspace&) = delete;

  // vmm::Workspace::grow_to / shrink_to (their contracts and errors).
  void grow(std::size_t new_size);
  void shrink(std::size_t new_size, cudaStream_t stream);

  std::size_t size() const noexcept { return workspace_.size(); }
  std::size_t capacity() const noexcept { return workspace_.capacity(); }
  std::size_t mapped_bytes() const noexcept { return workspace_.mapped_bytes(); }
  int device() const noexcept { return device_; }
  std::uintptr_t data_ptr() const noexcept {
    return reinterpret_cast<std::uintptr_t>(workspace_.data());
  }
  cudaStream_t release_stream() const noexcept { return release_stream_; }
  // The name shown in vmmalloc's snapshots and by vmmctl ("" clears it).
  void set_name(const std::string& name) { workspace_.set_name(name); }
  std::string name() const { return workspace_.name(); }

  // A 1-D uint8 CUDA tensor over [offset, offset + nbytes) of `self`,
  // keeping `self` alive. Throws c10::Error if the range is not inside
  // size().
  static at::Tensor bytes(const std::shared_ptr<TorchWorkspace>& self, std::size_t offset,
                          std::size_t nbytes);

  // The workspaces made through this extension that are alive now, on
  // `device`: how many, their sizes and their mapped bytes, summed.
  struct Totals {
    std::size_t count = 0;
    std::size_t size_bytes = 0;
    std::size_t mapped_bytes = 0;
  };
  static Totals totals(int device);

 private:
  vmm::Workspace workspace_;
  int device_;
  cudaStream_t release_stream_;
};

}  // namespace vmmalloc_torch
