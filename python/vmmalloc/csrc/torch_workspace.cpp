#include "torch_workspace.hpp"

#include <c10/util/Exception.h>

#include <cstdio>
#include <mutex>
#include <unordered_set>

#include "devices.hpp"
#include "errors.hpp"
#include "vmmalloc/errors.hpp"

namespace vmmalloc_torch {

namespace {

// Every live TorchWorkspace, for totals(); guarded by its mutex.
struct Registry {
  std::mutex mutex;
  std::unordered_set<const TorchWorkspace*> live;
};

Registry& registry() {
  static auto* r = new Registry();  // never destroyed: workspaces may die at exit
  return *r;
}

}  // namespace

TorchWorkspace::TorchWorkspace(std::size_t capacity, int device, cudaStream_t release_stream)
    : workspace_(capacity, device), device_(device), release_stream_(release_stream) {
  note_device(device);
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.live.insert(this);
}

TorchWorkspace::Totals TorchWorkspace::totals(int device) {
  Totals t;
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (const TorchWorkspace* ws : r.live) {
    if (ws->device_ != device) continue;
    ++t.count;
    t.size_bytes += ws->size();
    t.mapped_bytes += ws->mapped_bytes();
  }
  return t;
}

TorchWorkspace::~TorchWorkspace() {
  {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    r.live.erase(this);
  }
  try {
    workspace_.release(release_stream_);
  } catch (const std::exception& e) {
    // The fence could not be recorded: vmm::Workspace's destructor releases
    // after the legacy default stream instead. A destructor never throws.
    std::fprintf(stderr, "vmmalloc: releasing a workspace on its stream failed: %s\n", e.what());
  }
}

void TorchWorkspace::grow(std::size_t new_size) { workspace_.grow_to(new_size); }

void TorchWorkspace::shrink(std::size_t new_size, cudaStream_t stream) {
  workspace_.shrink_to(new_size, stream);
}

at::Tensor TorchWorkspace::bytes(const std::shared_ptr<TorchWorkspace>& self, std::size_t offset,
                                 std::size_t nbytes) {
  const std::size_t size = self->size();
  if (offset > size || nbytes > size - offset) {
    throw_value_error(message("vmmalloc Workspace: bytes [", offset, ", ", offset + nbytes,
                              ") are outside its size of ", size, " bytes (grow it first)"));
  }
  auto* base = static_cast<char*>(self->workspace_.data());
  const c10::Device device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(self->device_));
  // target_device given: PyTorch does not have to ask the driver which
  // device the pointer is on.
  return at::from_blob(
      base + offset, {static_cast<std::int64_t>(nbytes)},
      [keep = self](void*) {
        // The last tensor over the memory is gone; `keep` goes with this
        // deleter (and the workspace with it if nothing else holds it).
      },
      at::TensorOptions().dtype(at::kByte).device(device), device);
}

}  // namespace vmmalloc_torch
