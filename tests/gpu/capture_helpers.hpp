// Runtime calls the GPU misuse tests need beyond gpu_kernels.hpp, kept in a
// .cu file so the Catch2 sources never include the CUDA runtime headers.
#pragma once

#include <string>

#include "allocator/backend/backend.hpp"

namespace vmm::test {

// Makes the capture in progress on `stream` fail the way a user's mistake
// does: synchronizing a capturing stream is illegal, so the runtime refuses
// it and invalidates the capture (cudaStreamEndCapture then fails). Returns
// the name of the error the synchronize got ("cudaErrorStreamCaptureUnsupported").
std::string break_capture(Stream stream);

// True while `stream` is capturing (cudaStreamIsCapturing reports active or
// invalidated).
bool capture_in_progress(Stream stream);

}  // namespace vmm::test
