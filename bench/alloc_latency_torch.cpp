// bench/alloc_latency_torch: the alloc_latency loop (alloc_latency_harness.hpp)
// on PyTorch's CUDA caching allocator called from C++ (system `torch-caching`):
// c10::cuda::CUDACachingAllocator::raw_alloc_with_stream(size, stream) then
// raw_delete(ptr), each thread on its own stream (thread i: the i-th stream
// taken from c10's stream pool at start-up, non-blocking like the streams of
// bench/alloc_latency).
//
// Built only where PyTorch is installed: configure with
// -DVMMALLOC_TORCH_DIR=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
// (bench/alloc_latency.sh does). It links libc10_cuda and libc10 and nothing of
// vmmalloc, and calls no CUDA runtime function itself (c10 wraps what it needs),
// so it uses the one CUDA runtime torch loads. The allocator runs with its
// default settings: the caller must leave PYTORCH_CUDA_ALLOC_CONF unset (the
// program refuses to run if the backend is not the native caching allocator).
//
// Writes the rows in the results format of docs/benchmarks.md; the card and
// driver are taken from bench/alloc_latency's file when
// bench/alloc_latency_merge.py merges the two.

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "alloc_latency_harness.hpp"

// c10 asks libtorch_cuda (which this program does not load) whether a device
// has a primary context, through a hook that libtorch_cuda registers at load
// time; without it c10 throws "Should never been called". The program makes
// the device's primary context (c10::cuda::set_device: cudaSetDevice creates
// it since CUDA 12) before anything asks, so its hook answers yes.
namespace c10::cuda::_internal {
void setHasPrimaryContext(bool (*func)(c10::DeviceIndex));
}

namespace {

namespace al = alloc_latency;

bool primary_context_made(c10::DeviceIndex) { return true; }
namespace cca = c10::cuda::CUDACachingAllocator;

struct TorchSys {
  struct Thread {
    cudaStream_t stream = nullptr;
  };
  c10::DeviceIndex device = 0;
  std::vector<cudaStream_t> streams;

  Thread thread_setup(int i) {
    c10::cuda::set_device(device);
    return Thread{streams.at(static_cast<std::size_t>(i))};
  }
  void* alloc(Thread& t, std::size_t bytes) {
    void* p = cca::raw_alloc_with_stream(bytes, t.stream);
    if (p == nullptr) throw std::runtime_error("raw_alloc_with_stream returned nullptr");
    return p;
  }
  void release(Thread&, void* p) { cca::raw_delete(p); }
};

void usage(std::FILE* f) {
  std::fprintf(f, "usage: alloc_latency_torch [options]\n%s", al::common_usage());
}

int run(int argc, char** argv) {
  al::Common c;
  try {
    al::set_common_defaults(c, "bench/results/alloc_latency_torch.json");
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        usage(stdout);
        return 0;
      }
      if (!al::parse_common(c, argc, argv, i)) throw std::invalid_argument("unknown option " + a);
    }
    al::validate_common(c);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "alloc_latency_torch: %s\n", e.what());
    usage(stderr);
    return 2;
  }

  const c10::DeviceIndex devices = c10::cuda::device_count();
  if (c.device < 0 || c.device >= devices) {
    throw std::runtime_error("device " + std::to_string(c.device) + " not found (" +
                             std::to_string(devices) + " devices)");
  }
  TorchSys sys;
  sys.device = static_cast<c10::DeviceIndex>(c.device);
  c10::cuda::set_device(sys.device);
  c10::cuda::_internal::setHasPrimaryContext(primary_context_made);
  // Python's torch.cuda initialisation does this; a C++ caller must.
  cca::init(devices);
  const std::string backend = cca::get()->name();
  if (backend != "native") {
    throw std::runtime_error("the CUDA allocator backend is '" + backend +
                             "', not the native caching allocator: unset PYTORCH_CUDA_ALLOC_CONF");
  }
  for (int i = 0; i < al::max_threads(c); ++i) {
    sys.streams.push_back(c10::cuda::getStreamFromPool(false, sys.device).stream());
  }

  vmm::bench::RunInfo meta = vmm::bench::run_info("alloc_latency", c.commit, argc, argv);
  meta.device = "unknown";  // bench/alloc_latency_merge.py takes the card from alloc_latency
  meta.driver = vmm::bench::kernel_driver_version();

  std::printf("alloc_latency_torch: device %d, allocator backend %s, commit %s; each thread its own "
              "stream\n",
              c.device, backend.c_str(), meta.commit.c_str());
  std::printf("timing: warm-up >= %.0f ms, batches of >= %.0f us, window %.0f ms per cell\n\n",
              c.timing.warmup_ms, c.timing.batch_us, c.timing.window_ms);
  al::print_header();

  std::vector<al::Row> rows;
  for (std::size_t bytes : c.sizes) {
    for (int threads : c.threads) {
      const al::Cell cell = al::measure(sys, bytes, threads, c.timing);
      al::print_cell("torch-caching", bytes, threads, cell);
      rows.push_back({"torch-caching", bytes, threads, cell.ns_per_pair_median, cell.pairs_per_s_total, {}});
    }
  }
  al::write_results(c.out, meta, rows);
  std::printf("\nwrote %s\n", c.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "alloc_latency_torch: %s\n", e.what());
    return 1;
  }
}
