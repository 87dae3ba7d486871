// libFuzzer target: the IPC wire format's decoders (allocator/ipc/protocol.*)
// against a hostile peer - the importer's request_layout (header, layout and
// chunks messages, descriptors attached or missing) and the exporter's
// receive_sync - through a real Unix socket pair. The input format and the
// promises checked are in ipc_fuzz_input.hpp; a broken promise aborts.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "tests/fuzz/ipc_fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const vmm::ipc_fuzz::Outcome outcome = vmm::ipc_fuzz::run(data, size);
  if (!outcome.violation.empty()) {
    std::fprintf(stderr, "ipc_fuzzer: %s\n", outcome.violation.c_str());
    std::abort();
  }
  return 0;
}
