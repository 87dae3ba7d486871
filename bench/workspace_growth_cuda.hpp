// The CUDA plumbing shared by bench/workspace_growth's files: sizes and the
// clock, CUDA runtime error checks (check_cuda, CUDA_CHECK), and the table of
// driver functions the bench calls directly (Driver).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace vmm::bench::growth {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kGiB = std::size_t{1} << 30;
// The driver ABI version the entry points are asked for: the one of the
// toolkit this is built with (CUDA 13.0).
constexpr unsigned int kDriverApiVersion = 13000;

// ------------------------------------------------------------------ errors

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                             cudaGetErrorString(e) + ")");
  }
}

// ------------------------------------------------------------ driver table

// The driver functions the bench calls directly, from the runtime's view of
// the driver (no libcuda link).
struct Driver {
  decltype(&::cuMemGetInfo) mem_get_info = nullptr;
  decltype(&::cuMemCreate) mem_create = nullptr;
  decltype(&::cuMemRelease) mem_release = nullptr;
  decltype(&::cuMemMap) mem_map = nullptr;
  decltype(&::cuMemUnmap) mem_unmap = nullptr;
  decltype(&::cuMemSetAccess) mem_set_access = nullptr;
  decltype(&::cuMemAddressReserve) mem_address_reserve = nullptr;
  decltype(&::cuMemAddressFree) mem_address_free = nullptr;
  decltype(&::cuMemGetAllocationGranularity) mem_get_allocation_granularity = nullptr;
  decltype(&::cuGetErrorName) get_error_name = nullptr;

  template <class Fn>
  static void load(Fn& fn, const char* symbol) {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult status{};
    const cudaError_t e =
        cudaGetDriverEntryPointByVersion(symbol, &p, kDriverApiVersion, cudaEnableDefault, &status);
    if (e != cudaSuccess || status != cudaDriverEntryPointSuccess || p == nullptr) {
      throw std::runtime_error(std::string("cudaGetDriverEntryPointByVersion(") + symbol +
                               "): " + cudaGetErrorName(e) + ", query status " +
                               std::to_string(static_cast<int>(status)));
    }
    fn = reinterpret_cast<Fn>(p);
  }

  void load_all() {
    load(mem_get_info, "cuMemGetInfo");
    load(mem_create, "cuMemCreate");
    load(mem_release, "cuMemRelease");
    load(mem_map, "cuMemMap");
    load(mem_unmap, "cuMemUnmap");
    load(mem_set_access, "cuMemSetAccess");
    load(mem_address_reserve, "cuMemAddressReserve");
    load(mem_address_free, "cuMemAddressFree");
    load(mem_get_allocation_granularity, "cuMemGetAllocationGranularity");
    load(get_error_name, "cuGetErrorName");
  }

  void check(CUresult r, const char* what) const {
    if (r == CUDA_SUCCESS) return;
    const char* name = nullptr;
    if (get_error_name == nullptr || get_error_name(r, &name) != CUDA_SUCCESS || name == nullptr) {
      name = "unknown CUresult";
    }
    throw std::runtime_error(std::string(what) + ": " + name + " (" +
                             std::to_string(static_cast<int>(r)) + ")");
  }
};

}  // namespace vmm::bench::growth

#define CUDA_CHECK(expr) ::vmm::bench::growth::check_cuda((expr), #expr)
