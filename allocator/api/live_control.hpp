// The API layer's entry to a process-wide device context: the context
// (process_context: observability started), with the live socket's sleep
// and wake requests (`vmmctl sleep|wake PID TAGS`, docs/sleep.md) answered
// through Allocator::sleep_everywhere / wake_everywhere from then on.
#pragma once

namespace vmm {

class DeviceContext;

// process_context(device), installing the live socket's control handler
// once. Same errors as process_context.
DeviceContext& api_context(int device);

}  // namespace vmm
