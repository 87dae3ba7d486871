// The process-wide context of a device as every public entry point takes
// it: vm/device_context.hpp's device_context(), with the process's
// observability (event ring, live socket, exit snapshot; observe/snapshot.hpp)
// started once the first context exists. Observability is started from
// here, above the layers it watches, so nothing below observe/ calls up.
#pragma once

namespace vmm {

class DeviceContext;

// device_context(device) (same errors), then start_process_observability()
// with the process configuration, once per process.
DeviceContext& process_context(int device);

}  // namespace vmm
