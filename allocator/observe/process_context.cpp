#include "allocator/observe/process_context.hpp"

#include "allocator/observe/snapshot.hpp"
#include "allocator/vm/device_context.hpp"

namespace vmm {

DeviceContext& process_context(int device) {
  DeviceContext& context = device_context(device);
  start_process_observability(context.config());  // its body runs once (std::call_once)
  return context;
}

}  // namespace vmm
