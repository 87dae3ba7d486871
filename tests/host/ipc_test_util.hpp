// Helpers shared by the IPC test files (ipc_tests.cpp, ipc_process_tests.cpp,
// ipc_peer_tests.cpp): one side's allocator state as a process would have
// it, socket pairs, counting the host backend's memfds open in this process,
// and reading bytes of a mapping.
#pragma once

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string_view>
#include <thread>
#include <utility>

#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/backend/host_backend.hpp"
#include "allocator/base/units.hpp"
#include "allocator/vm/device_context.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/child_process.hpp"  // stream_pair
#include "tests/common/test_util.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm::test {

// One side's allocator state: what a process would have. `conf` is applied
// over the test settings (VMMALLOC_CONF's grammar).
struct IpcSide {
  explicit IpcSide(std::string_view conf = {}) {
    vmm::Config config;
    config.va_reservation_size = 1 * GiB;
    config.chunk_sizes = {2 * MiB, 8 * MiB};  // several chunks per grow
    config.pool_cache_limit = 64 * MiB;
    config.apply(conf);
    HostBackend::Options o;
    o.device_memory = 1 * GiB;
    host = std::make_unique<HostBackend>(o);
    auto wrapper = std::make_unique<vmm::FaultInjectingBackend>(*host);
    faults = wrapper.get();
    context = std::make_unique<vmm::DeviceContext>(std::move(wrapper), config);
  }
  // Tears the context down and checks the backend holds nothing.
  void finish() {
    context.reset();
    const vmm::LiveObjects live = host->live_objects();
    INFO("left: " << live.handles << " handles, " << live.mapped_bytes << " bytes mapped, "
                  << live.reservations << " reservations");
    CHECK(live == vmm::LiveObjects{});
  }
  std::unique_ptr<HostBackend> host;
  vmm::FaultInjectingBackend* faults = nullptr;
  std::unique_ptr<vmm::DeviceContext> context;
};

// Open memfds of the host backend in this process.
inline int open_memfds() {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (!ec && target.string().rfind("/memfd:vmmalloc-host-handle", 0) == 0) ++n;
  }
  return n;
}

inline bool closed(int fd) { return ::fcntl(fd, F_GETFD) == -1 && errno == EBADF; }

// Waits until `pred` holds (checked every millisecond), at most 5 s.
template <class P>
bool eventually(P pred) {
  using namespace std::chrono_literals;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

inline unsigned char* at(void* base, std::size_t offset) {
  return static_cast<unsigned char*>(base) + offset;
}

// Every one of `bytes` bytes at `p` is `value`.
inline bool all_equal(const void* p, std::size_t bytes, unsigned char value) {
  const auto* b = static_cast<const unsigned char*>(p);
  return std::all_of(b, b + bytes, [&](unsigned char v) { return v == value; });
}

// The code of the vmm::DriverError that `f` must throw.
inline int driver_code(const std::function<void()>& f) {
  return expect_throw<DriverError>(f).code();
}

}  // namespace vmm::test
