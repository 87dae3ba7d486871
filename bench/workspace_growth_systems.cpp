// The systems bench/workspace_growth compares: see workspace_growth_systems.hpp.
#include "workspace_growth_systems.hpp"

#include <cuda.h>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <stdexcept>

#include "vmmalloc/workspace.hpp"

namespace vmm::bench::growth {

namespace {

constexpr std::size_t kNaivePage = 2 * kMiB;

class CudaMallocSystem final : public System {
 public:
  explicit CudaMallocSystem(cudaStream_t stream) : stream_(stream) {}
  ~CudaMallocSystem() override {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  const char* name() const override { return "cudamalloc"; }
  void allocate(std::size_t bytes) override {
    CUDA_CHECK(cudaMalloc(&ptr_, bytes));
    size_ = bytes;
  }
  void resize(std::size_t bytes) override {
    void* fresh = nullptr;
    CUDA_CHECK(cudaMalloc(&fresh, bytes));
    const cudaError_t copied =
        cudaMemcpyAsync(fresh, ptr_, size_, cudaMemcpyDeviceToDevice, stream_);
    if (copied != cudaSuccess) {
      cudaFree(fresh);
      check_cuda(copied, "cudaMemcpyAsync");
    }
    // cudaFree waits for the device (the queued work) before it returns.
    CUDA_CHECK(cudaFree(ptr_));
    ptr_ = fresh;
    size_ = bytes;
  }
  void* data() const override { return ptr_; }
  void release() override {
    void* p = ptr_;
    ptr_ = nullptr;
    CUDA_CHECK(cudaFree(p));
  }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
};

class CudaMallocAsyncSystem final : public System {
 public:
  CudaMallocAsyncSystem(cudaStream_t stream, int device) : stream_(stream) {
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool_, device));
    // Release threshold 0 (the default, set explicitly): the pool gives
    // unused memory back at every synchronization.
    std::uint64_t zero = 0;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &zero));
    CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReservedMemHigh, &zero));
  }
  ~CudaMallocAsyncSystem() override {
    if (ptr_ != nullptr) {
      cudaFreeAsync(ptr_, stream_);
      cudaStreamSynchronize(stream_);
      cudaMemPoolTrimTo(pool_, 0);
    }
  }
  const char* name() const override { return "cudamallocasync"; }
  void allocate(std::size_t bytes) override {
    CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream_));
    size_ = bytes;
  }
  void resize(std::size_t bytes) override {
    void* fresh = nullptr;
    CUDA_CHECK(cudaMallocAsync(&fresh, bytes, stream_));
    CUDA_CHECK(cudaMemcpyAsync(fresh, ptr_, size_, cudaMemcpyDeviceToDevice, stream_));
    CUDA_CHECK(cudaFreeAsync(ptr_, stream_));
    ptr_ = fresh;
    size_ = bytes;
  }
  void* data() const override { return ptr_; }
  void release() override {
    std::uint64_t high = 0;
    CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemHigh, &high));
    reserved_high_ = high;
    void* p = ptr_;
    ptr_ = nullptr;
    CUDA_CHECK(cudaFreeAsync(p, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    CUDA_CHECK(cudaMemPoolTrimTo(pool_, 0));
  }
  std::string note() const override {
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "default pool, release threshold 0; pool reserved high-water mark %.2f GiB",
                  static_cast<double>(reserved_high_) / static_cast<double>(kGiB));
    return buf;
  }

 private:
  cudaStream_t stream_;
  cudaMemPool_t pool_ = nullptr;
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t reserved_high_ = 0;
};

// The naive VMM design: one 2 MiB handle per page, each created, mapped and
// given access on its own.
class VmmNaiveSystem final : public System {
 public:
  VmmNaiveSystem(const Driver& driver, int device, std::size_t capacity) : drv_(driver) {
    prop_.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop_.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop_.location.id = device;
    access_.location = prop_.location;
    access_.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    std::size_t granularity = 0;
    drv_.check(drv_.mem_get_allocation_granularity(&granularity, &prop_,
                                                   CU_MEM_ALLOC_GRANULARITY_MINIMUM),
               "cuMemGetAllocationGranularity");
    if (granularity == 0 || kNaivePage % granularity != 0) {
      throw std::runtime_error("vmm-naive-2mib: granularity " + std::to_string(granularity) +
                               " does not divide 2 MiB");
    }
    reserved_ = (capacity + kNaivePage - 1) / kNaivePage * kNaivePage;
    drv_.check(drv_.mem_address_reserve(&base_, reserved_, kNaivePage, 0, 0),
               "cuMemAddressReserve");
  }
  ~VmmNaiveSystem() override {
    try {
      release();
    } catch (...) {
      // Destructors do not throw; release() already freed what it could.
    }
  }
  const char* name() const override { return "vmm-naive-2mib"; }
  void allocate(std::size_t bytes) override { resize(bytes); }
  void resize(std::size_t bytes) override {
    const std::size_t pages = (bytes + kNaivePage - 1) / kNaivePage;
    if (pages * kNaivePage > reserved_) throw std::runtime_error("vmm-naive-2mib: past reservation");
    while (handles_.size() < pages) {
      const CUdeviceptr at = base_ + handles_.size() * kNaivePage;
      CUmemGenericAllocationHandle h = 0;
      drv_.check(drv_.mem_create(&h, kNaivePage, &prop_, 0), "cuMemCreate");
      CUresult r = drv_.mem_map(at, kNaivePage, 0, h, 0);
      if (r != CUDA_SUCCESS) {
        drv_.mem_release(h);
        drv_.check(r, "cuMemMap");
      }
      r = drv_.mem_set_access(at, kNaivePage, &access_, 1);
      if (r != CUDA_SUCCESS) {
        drv_.mem_unmap(at, kNaivePage);
        drv_.mem_release(h);
        drv_.check(r, "cuMemSetAccess");
      }
      handles_.push_back(h);
    }
  }
  void* data() const override { return reinterpret_cast<void*>(base_); }
  // Frees every page and the reservation; keeps going past a failure so
  // nothing leaks, then reports the first failure.
  void release() override {
    CUresult first = CUDA_SUCCESS;
    const char* first_call = "";
    auto note_failure = [&](CUresult r, const char* call) {
      if (r != CUDA_SUCCESS && first == CUDA_SUCCESS) {
        first = r;
        first_call = call;
      }
    };
    for (std::size_t i = handles_.size(); i-- > 0;) {
      note_failure(drv_.mem_unmap(base_ + i * kNaivePage, kNaivePage), "cuMemUnmap");
      note_failure(drv_.mem_release(handles_[i]), "cuMemRelease");
    }
    handles_.clear();
    if (base_ != 0) {
      note_failure(drv_.mem_address_free(base_, reserved_), "cuMemAddressFree");
      base_ = 0;
    }
    drv_.check(first, first_call);
  }

 private:
  const Driver& drv_;
  CUmemAllocationProp prop_{};
  CUmemAccessDesc access_{};
  CUdeviceptr base_ = 0;
  std::size_t reserved_ = 0;
  std::vector<CUmemGenericAllocationHandle> handles_;
};

class VmmallocWorkspaceSystem final : public System {
 public:
  VmmallocWorkspaceSystem(int device, std::size_t capacity)
      : device_(device), capacity_(capacity) {}
  const char* name() const override { return "vmmalloc-workspace"; }
  void allocate(std::size_t bytes) override {
    ws_.emplace(capacity_, device_);
    ws_->grow_to(bytes);
  }
  void resize(std::size_t bytes) override { ws_->grow_to(bytes); }
  void* data() const override { return ws_->data(); }
  void release() override {
    mapped_at_end_ = ws_->mapped_bytes();
    // The destructor hands the memory back once the null stream's work has
    // completed; the work stream was drained before this.
    ws_.reset();
  }
  std::string note() const override {
    return "mapped_bytes after the last grow: " + std::to_string(mapped_at_end_);
  }

 private:
  int device_;
  std::size_t capacity_;
  std::optional<vmm::Workspace> ws_;
  std::size_t mapped_at_end_ = 0;
};

}  // namespace

const std::vector<std::string>& all_systems() {
  static const std::vector<std::string> names{"cudamalloc", "cudamallocasync", "vmm-naive-2mib",
                                              "vmmalloc-workspace"};
  return names;
}

std::unique_ptr<System> make_system(const std::string& name, cudaStream_t stream,
                                    const Driver& driver, int device, std::size_t capacity) {
  if (name == "cudamalloc") return std::make_unique<CudaMallocSystem>(stream);
  if (name == "cudamallocasync") return std::make_unique<CudaMallocAsyncSystem>(stream, device);
  if (name == "vmm-naive-2mib") return std::make_unique<VmmNaiveSystem>(driver, device, capacity);
  if (name == "vmmalloc-workspace") return std::make_unique<VmmallocWorkspaceSystem>(device, capacity);
  throw std::runtime_error("unknown system " + name);
}

}  // namespace vmm::bench::growth
