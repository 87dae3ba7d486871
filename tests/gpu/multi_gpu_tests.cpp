// Two-GPU tests: per-device state, peer access and IPC across processes and
// GPUs, with real kernels. They need two GPUs that can reach each other
// (peer to peer); with fewer GPUs every case prints why and exits 77, which
// CTest reports as skipped (this binary holds nothing else, so running it
// by hand on one GPU simply stops there too).
//
// Each case builds its own device contexts over CudaBackends the test keeps,
// so that after the contexts are gone it can check that the backends hold no
// handle, reservation or mapping. The IPC cases run the importer in a child
// process: this binary again, spawned with a hidden test case, the sockets'
// descriptors at fixed numbers and the scenario in its environment.
// Kernels come from multi_gpu_kernels.cu. No case synchronizes a device.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "allocator/vm/address_space.hpp"
#include "allocator/backend/cuda_backend.hpp"
#include "allocator/backend/cuda_driver.hpp"
#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/child_process.hpp"
#include "tests/gpu/multi_gpu_kernels.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/ipc.hpp"
#include "vmmalloc/peer_access.hpp"
#include "vmmalloc/workspace.hpp"

namespace {

using vmm::GiB;
using vmm::MiB;
using vmm::test::send_token;
using vmm::test::stream_pair;
using vmm::test::fill_on;
using vmm::test::mismatches_on;
using vmm::test::synchronize_on;
using namespace std::chrono_literals;
using Devices = std::vector<int>;

constexpr int kSkip = 77;

// Exits 77 (skipped) unless two GPUs exist.
void require_two_gpus() {
  const vmm::cuda::LoadResult& loaded = vmm::cuda::load();
  const int n = loaded.driver != nullptr ? loaded.driver->device_count : 0;
  if (n < 2) {
    std::printf("SKIPPED: %d GPU(s) visible; the multi-GPU tests need 2\n", n);
    std::fflush(stdout);
    std::exit(kSkip);
  }
}

// Exits 77 (skipped) unless devices 0 and 1 can reach each other.
void require_peers() {
  require_two_gpus();
  if (!vmm::test::runtime_can_access_peer(0, 1) || !vmm::test::runtime_can_access_peer(1, 0)) {
    std::printf("SKIPPED: devices 0 and 1 cannot access each other's memory (no peer to peer)\n");
    std::fflush(stdout);
    std::exit(kSkip);
  }
}

vmm::Config test_config() {
  vmm::Config c;
  c.va_reservation_size = 64 * GiB;
  c.pool_cache_limit = 0;
  return c;
}

// A device context over a CudaBackend the test keeps.
struct Gpu {
  explicit Gpu(int ordinal, const vmm::Config& config = test_config())
      : device(ordinal),
        backend(std::make_unique<vmm::CudaBackend>(ordinal)),
        context(std::make_unique<vmm::DeviceContext>(
            std::make_unique<vmm::FaultInjectingBackend>(*backend), config)),
        stream(vmm::test::create_stream_on(ordinal)) {}
  ~Gpu() {
    if (context) finish();
  }
  // Waits for the stream, tears the context down, checks nothing is left.
  void finish() {
    synchronize_on(device, stream);
    context.reset();
    vmm::test::destroy_stream_on(device, stream);
    const vmm::LiveObjects live = backend->live_objects();
    INFO("device " << device << " left: " << live.handles << " handles, " << live.mapped_bytes
                   << " bytes mapped, " << live.reservations << " reservations");
    CHECK(live == vmm::LiveObjects{});
  }
  int device;
  std::unique_ptr<vmm::CudaBackend> backend;
  std::unique_ptr<vmm::DeviceContext> context;
  vmm::Stream stream;
};

unsigned char* at(void* base, std::size_t offset) {
  return static_cast<unsigned char*>(base) + offset;
}

}  // namespace

TEST_CASE("devices: each device has its own allocator, whatever device is current",
          "[multi_gpu]") {
  require_two_gpus();
  for (int d = 0; d < 2; ++d) {
    const int other = 1 - d;
    INFO("device " << d << ", current device " << other);
    vmm::test::set_current_device(other);
    vmm::Workspace ws(4 * GiB, d);
    ws.grow_to(64 * MiB);
    CHECK(ws.device() == d);
    CHECK(vmm::test::pointer_device(ws.data()) == d);
    CHECK(vmm::test::current_device() == other);  // vmmalloc left it alone

    void* p = vmm::Allocator::instance(d).allocate(8 * MiB);
    CHECK(vmm::test::pointer_device(p) == d);
    CHECK(vmm::Allocator::instance(d).device() == d);
    vmm::Allocator::instance(d).deallocate(p);
    CHECK(vmm::test::current_device() == other);

    // -1 is the calling thread's current device.
    vmm::Workspace current(1 * GiB);
    current.grow_to(2 * MiB);
    CHECK(current.device() == other);
    CHECK(vmm::test::pointer_device(current.data()) == other);

    // Kernels of each device see their own memory.
    const vmm::Stream s = vmm::test::create_stream_on(d);
    fill_on(d, s, ws.data(), ws.size(), static_cast<std::uint8_t>(0x40 + d));
    CHECK(mismatches_on(d, s, ws.data(), ws.size(), static_cast<std::uint8_t>(0x40 + d)) == 0);
    ws.release(s);
    current.release(nullptr);
    vmm::test::destroy_stream_on(d, s);

    // Each device's reservations keep to its share of the address space.
    CHECK(vmm::device_context(d).address_space().reservation_size() <=
          vmm::AddressSpace::reservation_budget(vmm::cuda::load().driver->device_count));
  }
  vmm::test::set_current_device(0);
}

TEST_CASE("peer access: a kernel on device 1 reads and writes device 0's workspace, also after "
          "it grows",
          "[multi_gpu][peer_access]") {
  require_peers();
  Gpu gpu0(0);
  Gpu gpu1(1);
  CHECK(gpu0.context->backend().can_access_peer(1));
  {
    vmm::Workspace ws(*gpu0.context, 4 * GiB);
    ws.grow_to(64 * MiB);
    fill_on(0, gpu0.stream, ws.data(), ws.size(), 0x11);
    synchronize_on(0, gpu0.stream);

    const int peer[] = {1};
    gpu0.context->grant_peer_access(peer);  // existing mappings
    CHECK(gpu0.context->access_devices() == Devices{0, 1});
    CHECK(mismatches_on(1, gpu1.stream, ws.data(), ws.size(), 0x11) == 0);
    fill_on(1, gpu1.stream, ws.data(), 32 * MiB, 0x22);
    synchronize_on(1, gpu1.stream);
    CHECK(mismatches_on(0, gpu0.stream, ws.data(), 32 * MiB, 0x22) == 0);
    CHECK(mismatches_on(0, gpu0.stream, at(ws.data(), 32 * MiB), 32 * MiB, 0x11) == 0);

    // Grown after the grant: the new chunks are accessible too.
    ws.grow_to(700 * MiB + 123);
    fill_on(1, gpu1.stream, at(ws.data(), 64 * MiB), ws.size() - 64 * MiB, 0x33);
    synchronize_on(1, gpu1.stream);
    CHECK(mismatches_on(0, gpu0.stream, at(ws.data(), 64 * MiB), ws.size() - 64 * MiB, 0x33) ==
          0);
    CHECK(mismatches_on(1, gpu1.stream, ws.data(), 32 * MiB, 0x22) == 0);

    // The general allocator's blocks too (mapped after the grant).
    vmm::Allocator allocator(*gpu0.context);
    void* p = allocator.allocate(48 * MiB, gpu0.stream);
    fill_on(1, gpu1.stream, p, 48 * MiB, 0x44);
    synchronize_on(1, gpu1.stream);
    CHECK(mismatches_on(0, gpu0.stream, p, 48 * MiB, 0x44) == 0);
    allocator.deallocate(p);
    ws.release(gpu0.stream);
  }
  gpu1.finish();
  gpu0.finish();
}

TEST_CASE("peer access: peer_access:all grants every device that can reach",
          "[multi_gpu][peer_access]") {
  require_peers();
  vmm::Config config = test_config();
  config.peer_access = vmm::PeerAccessMode::all;
  Gpu gpu1(1, config);
  Gpu gpu0(0);
  CHECK(gpu1.context->access_devices() == Devices{1, 0});
  {
    vmm::Workspace ws(*gpu1.context, 4 * GiB);
    ws.grow_to(100 * MiB);
    fill_on(0, gpu0.stream, ws.data(), ws.size(), 0x55);  // device 0 writes device 1's memory
    synchronize_on(0, gpu0.stream);
    CHECK(mismatches_on(1, gpu1.stream, ws.data(), ws.size(), 0x55) == 0);
    ws.shrink_to(10 * MiB, gpu1.stream);
    ws.grow_to(300 * MiB);
    fill_on(1, gpu1.stream, ws.data(), ws.size(), 0x56);
    synchronize_on(1, gpu1.stream);
    CHECK(mismatches_on(0, gpu0.stream, ws.data(), ws.size(), 0x56) == 0);
    ws.release(gpu1.stream);
  }
  gpu0.finish();
  gpu1.finish();
}

TEST_CASE("copies: cross-device copies between workspaces, with and without peer access",
          "[multi_gpu]") {
  require_two_gpus();
  for (const bool granted : {false, true}) {
    INFO((granted ? "peers granted" : "no peer access"));
    if (granted) require_peers();
    vmm::Config config = test_config();
    if (granted) config.peer_access = vmm::PeerAccessMode::all;
    Gpu gpu0(0, config);
    Gpu gpu1(1, config);
    {
      vmm::Workspace a(*gpu0.context, 4 * GiB);
      vmm::Workspace b(*gpu1.context, 4 * GiB);
      a.grow_to(96 * MiB);
      b.grow_to(96 * MiB);
      fill_on(0, gpu0.stream, a.data(), a.size(), 0x61);
      synchronize_on(0, gpu0.stream);
      vmm::test::copy_peer(b.data(), 1, a.data(), 0, a.size(), gpu0.stream);
      CHECK(mismatches_on(1, gpu1.stream, b.data(), b.size(), 0x61) == 0);
      // Grow both, then copy back the other way.
      a.grow_to(300 * MiB);
      b.grow_to(300 * MiB);
      fill_on(1, gpu1.stream, b.data(), b.size(), 0x62);
      synchronize_on(1, gpu1.stream);
      vmm::test::copy_peer(a.data(), 0, b.data(), 1, b.size(), gpu1.stream);
      CHECK(mismatches_on(0, gpu0.stream, a.data(), a.size(), 0x62) == 0);
      a.release(gpu0.stream);
      b.release(gpu1.stream);
    }
    gpu1.finish();
    gpu0.finish();
  }
}

// ------------------------------------------------------------ IPC
//
// The exporter (this process) shares a workspace of device 0; the importer
// (a child process) imports it twice: on device 0 (the memory's own GPU) and
// on device 1 (a peer), reading and writing it with kernels on both.

namespace {

constexpr int kChildIpcFd0 = 200;  // the import on device 0
constexpr int kChildIpcFd1 = 201;  // the import on device 1
constexpr int kChildControlFd = 202;

// The child runs "ipc: the importer in a child process" (below) with the
// three descriptors at kChildIpcFd0, kChildIpcFd1 and kChildControlFd.
pid_t spawn_importer(const char* scenario, const int (&fds)[3]) {
  return vmm::test::spawn_test_case(
      "ipc: the importer in a child process", scenario,
      {{fds[0], kChildIpcFd0}, {fds[1], kChildIpcFd1}, {fds[2], kChildControlFd}});
}

char wait_token(int fd) { return vmm::test::wait_token(fd, 120s); }

int wait_child(pid_t pid) { return vmm::test::wait_child(pid, 300s); }

constexpr std::size_t kFirst = 64 * MiB;
constexpr std::size_t kGrown = 320 * MiB;

void run_ipc(const char* scenario) {
  require_peers();
  auto gpu0 = std::make_unique<Gpu>(0);
  auto [ipc0, ipc0_child] = stream_pair();
  auto [ipc1, ipc1_child] = stream_pair();
  auto [control, control_child] = stream_pair();
  const int child_fds[3] = {ipc0_child, ipc1_child, control_child};
  const pid_t child = spawn_importer(scenario, child_fds);
  for (int fd : child_fds) ::close(fd);
  {
    auto ws = std::make_unique<vmm::Workspace>(*gpu0->context, 4 * GiB);
    ws->grow_to(kFirst);
    fill_on(0, gpu0->stream, ws->data(), kFirst, 0x11);
    synchronize_on(0, gpu0->stream);
    auto share = std::make_unique<vmm::WorkspaceExport>(*ws);
    share->serve(ipc0);
    share->serve(ipc1);

    REQUIRE(wait_token(control) == 'w');  // the child's device 1 wrote 16 MiB
    CHECK(mismatches_on(0, gpu0->stream, ws->data(), 16 * MiB, 0x22) == 0);
    CHECK(mismatches_on(0, gpu0->stream, at(ws->data(), 16 * MiB), kFirst - 16 * MiB, 0x11) ==
          0);
    ws->grow_to(kGrown);
    fill_on(0, gpu0->stream, at(ws->data(), kFirst), kGrown - kFirst, 0x33);
    synchronize_on(0, gpu0->stream);
    send_token(control, 'g');
    REQUIRE(wait_token(control) == 'u');  // the child's device 0 wrote the last 1 MiB
    CHECK(mismatches_on(0, gpu0->stream, at(ws->data(), kGrown - MiB), MiB, 0x44) == 0);

    if (std::string(scenario) == "exporter-first") {
      share.reset();
      ws->release(gpu0->stream);
      ws.reset();
      gpu0->finish();
      gpu0.reset();
      send_token(control, 'x');
      REQUIRE(wait_token(control) == 'c');
    } else {
      REQUIRE(wait_token(control) == 'c');  // the child closed both imports
      const auto deadline = std::chrono::steady_clock::now() + 10s;
      while (share->connections() != 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
      }
      CHECK(share->connections() == 0);
      fill_on(0, gpu0->stream, ws->data(), kGrown, 0x66);
      CHECK(mismatches_on(0, gpu0->stream, ws->data(), kGrown, 0x66) == 0);
      ws->release(gpu0->stream);
    }
  }
  CHECK(wait_child(child) == 0);
  ::close(control);
  if (gpu0) gpu0->finish();
}

}  // namespace

TEST_CASE("ipc: the importer in a child process", "[.][ipc_child]") {
  const char* scenario = std::getenv("VMM_TEST_IPC_SCENARIO");
  REQUIRE(scenario != nullptr);
  const std::string which = scenario;
  const int control = kChildControlFd;
  Gpu gpu0(0);
  Gpu gpu1(1);
  {
    vmm::WorkspaceImport in0(*gpu0.context, kChildIpcFd0);
    vmm::WorkspaceImport in1(*gpu1.context, kChildIpcFd1);
    CHECK(in0.size() == kFirst);
    CHECK(in1.size() == kFirst);
    CHECK(in0.device() == 0);
    CHECK(in1.device() == 1);
    CHECK(mismatches_on(0, gpu0.stream, in0.data(), kFirst, 0x11) == 0);
    CHECK(mismatches_on(1, gpu1.stream, in1.data(), kFirst, 0x11) == 0);  // over peer to peer
    fill_on(1, gpu1.stream, in1.data(), 16 * MiB, 0x22);
    synchronize_on(1, gpu1.stream);
    CHECK(mismatches_on(0, gpu0.stream, in0.data(), 16 * MiB, 0x22) == 0);
    send_token(control, 'w');

    REQUIRE(wait_token(control) == 'g');  // the exporter grew
    in0.update(gpu0.stream);
    in1.update(gpu1.stream);
    CHECK(in0.size() == kGrown);
    CHECK(in1.size() == kGrown);
    CHECK(mismatches_on(0, gpu0.stream, at(in0.data(), kFirst), kGrown - kFirst, 0x33) == 0);
    CHECK(mismatches_on(1, gpu1.stream, at(in1.data(), kFirst), kGrown - kFirst, 0x33) == 0);
    fill_on(0, gpu0.stream, at(in0.data(), kGrown - MiB), MiB, 0x44);
    synchronize_on(0, gpu0.stream);
    send_token(control, 'u');

    if (which == "exporter-first") {
      REQUIRE(wait_token(control) == 'x');  // the exporter is gone entirely
      // The memory lives on here, on both devices.
      CHECK(mismatches_on(1, gpu1.stream, at(in1.data(), kFirst), kGrown - kFirst - MiB,
                          0x33) == 0);
      fill_on(1, gpu1.stream, in1.data(), kGrown, 0x55);
      synchronize_on(1, gpu1.stream);
      CHECK(mismatches_on(0, gpu0.stream, in0.data(), kGrown, 0x55) == 0);
      try {
        in0.update(gpu0.stream);
        FAIL("update() after the exporter left should throw");
      } catch (const vmm::DriverError& e) {
        CHECK(e.code() == EPIPE);
      }
    }
    in1.close(gpu1.stream);
    in0.close(gpu0.stream);
  }
  gpu1.finish();
  gpu0.finish();
  send_token(control, 'c');
}

TEST_CASE("ipc: device 0's workspace in another process on devices 0 and 1, exporter first",
          "[multi_gpu][ipc]") {
  run_ipc("exporter-first");
}

TEST_CASE("ipc: device 0's workspace in another process on devices 0 and 1, importer first",
          "[multi_gpu][ipc]") {
  run_ipc("importer-first");
}
