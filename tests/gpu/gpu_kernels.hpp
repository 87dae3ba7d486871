// Kernels and runtime calls the GPU tests need beyond TestDevice, kept in a
// .cu file so the Catch2 test sources stay plain C++ (built with our strict
// warnings) and never include the CUDA runtime headers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "allocator/backend/backend.hpp"

namespace vmm::test {

// Queues on `stream` a kernel of `blocks` x 256 threads that keeps storing
// `value` over [ptr, ptr+bytes) until `milliseconds` of wall time have
// passed (at least one full pass). Throws std::runtime_error if the launch
// fails.
void launch_scribble(Stream stream, void* ptr, std::size_t bytes, std::uint8_t value,
                     unsigned milliseconds, unsigned blocks);

// True while work queued on `stream` is still running (cudaStreamQuery
// returns cudaErrorNotReady); false once it is idle. Throws
// std::runtime_error for any other result (e.g. a kernel fault).
bool stream_busy(Stream stream);

// CUDA-graph capture of a stream's work (cudaStreamCaptureModeGlobal, as
// torch.cuda.graph uses). end_capture returns an instantiated graph (opaque
// cudaGraphExec_t); each call throws std::runtime_error on failure, naming
// the runtime call (an invalidated capture fails in end_capture).
void begin_capture(Stream stream);
void* end_capture(Stream stream);
void launch_graph(void* graph_exec, Stream stream);
void destroy_graph(void* graph_exec);

}  // namespace vmm::test
