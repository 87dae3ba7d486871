// HostBackend: the CUDA VMM semantics in host memory. These tests hold the
// fake to the driver's behaviour the layers above rely on - alignment, map /
// access / unmap with real data and aliases, faults after unmap, the checks
// the driver makes, simulated capacity. Its stream and fence semantics are
// tested in host_streams_tests.cpp. Reservations stay small:
// ThreadSanitizer builds cannot map 1 TiB of PROT_NONE.
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "allocator/backend/host_backend.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "tests/common/test_device.hpp"
#include "vmmalloc/errors.hpp"

namespace {

using namespace std::chrono_literals;
using vmm::BackendCall;
using vmm::DriverError;
using vmm::HostBackend;
using vmm::MiB;

constexpr std::size_t G = 2 * MiB;  // the default granularity

using vmm::test::contains;
using vmm::test::expect_throw;

std::uint8_t* ptr(std::uintptr_t va) { return reinterpret_cast<std::uint8_t*>(va); }

// Runs `f` in a forked child with default signal handling; returns the
// signal that killed it, or 0 if it exited normally.
template <class F>
int signal_in_child(F&& f) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Catch2 and the sanitizers install SIGSEGV handlers: restore the default
    // so the child dies of the signal itself.
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    ::sigaction(SIGSEGV, &sa, nullptr);
    ::sigaction(SIGBUS, &sa, nullptr);
    f();
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

int open_fds() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
  }
  return n;
}

// One mapped, accessible handle inside a fresh reservation.
struct Mapped {
  HostBackend& b;
  std::uintptr_t base;
  std::size_t bytes;
  vmm::PhysicalHandle h;
  Mapped(HostBackend& backend, std::size_t n)
      : b(backend), base(b.reserve(n, G)), bytes(n), h(b.create(n)) {
    b.map(base, bytes, h);
    b.set_access(base, bytes);
  }
  ~Mapped() {
    b.unmap(base, bytes);
    b.release(h);
    b.free_va(base, bytes);
  }
};

}  // namespace

TEST_CASE("host backend: identity and memory info", "[host_backend]") {
  HostBackend::Options o;
  o.device = 3;
  o.device_memory = 64 * MiB;
  HostBackend b(o);
  CHECK(std::string(b.name()) == "host");
  CHECK(b.device() == 3);
  CHECK(b.granularity() == G);
  const vmm::DeviceMemoryInfo info = b.memory_info();
  CHECK(info.total_bytes == 64 * MiB);
  CHECK(info.free_bytes == 64 * MiB);
  CHECK(std::string(vmm::backend_call_name(BackendCall::set_access)) == "set_access");

  HostBackend::Options bad;
  bad.granularity = 3 * MiB;
  CHECK_THROWS_AS(HostBackend(bad), vmm::InvalidArgumentError);
}

TEST_CASE("host backend: reserve honours the alignment", "[host_backend]") {
  HostBackend b;
  for (std::size_t alignment : {G, 4 * MiB, 64 * MiB, 1024 * MiB}) {
    for (std::size_t bytes : {G, 3 * G}) {
      const std::uintptr_t base = b.reserve(bytes, alignment);
      CHECK(base % alignment == 0);
      CHECK(b.live_reservations() == 1);
      b.free_va(base, bytes);
      CHECK(b.live_reservations() == 0);
    }
  }
  // 0 means the granularity; a smaller power of two is raised to it.
  const std::uintptr_t a = b.reserve(G, 0);
  const std::uintptr_t c = b.reserve(G, 4096);
  CHECK(a % G == 0);
  CHECK(c % G == 0);
  CHECK(a != c);
  b.free_va(a, G);
  b.free_va(c, G);

  CHECK_THROWS_AS(b.reserve(0, G), DriverError);
  CHECK_THROWS_AS(b.reserve(G + 4096, G), DriverError);
  CHECK_THROWS_AS(b.reserve(G, 3 * MiB), DriverError);
  CHECK(b.live_reservations() == 0);
}

TEST_CASE("host backend: reserved VA is inaccessible until mapped with access", "[host_backend]") {
  HostBackend b;
  const std::uintptr_t base = b.reserve(2 * G, G);
  const vmm::PhysicalHandle h = b.create(G);
  b.map(base, G, h);
  // Reserved but unmapped, and mapped without access: both fault.
  CHECK(signal_in_child([&] { *reinterpret_cast<volatile std::uint8_t*>(base + G) = 1; }) ==
        SIGSEGV);
  CHECK(signal_in_child([&] { *reinterpret_cast<volatile std::uint8_t*>(base) = 1; }) == SIGSEGV);
  b.set_access(base, G);
  CHECK(signal_in_child([&] { *reinterpret_cast<volatile std::uint8_t*>(base) = 1; }) == 0);
  b.unmap(base, G);
  b.release(h);
  b.free_va(base, 2 * G);
}

TEST_CASE("host backend: free_va checks its range", "[host_backend]") {
  HostBackend b;
  const std::uintptr_t base = b.reserve(2 * G, G);

  DriverError e = expect_throw<DriverError>([&] { b.free_va(base + G, G); });
  CHECK(e.call() == "free_va");
  CHECK(contains(e.what(), "free_va"));
  CHECK(e.code() == EINVAL);
  CHECK_THROWS_AS(b.free_va(base, G), DriverError);  // not the whole reservation

  const vmm::PhysicalHandle h = b.create(G);
  b.map(base + G, G, h);
  e = expect_throw<DriverError>([&] { b.free_va(base, 2 * G); });
  CHECK(contains(e.what(), "mapping"));
  CHECK(b.live_reservations() == 1);  // unchanged
  b.set_access(base + G, G);          // still mapped
  b.unmap(base + G, G);
  b.release(h);
  b.free_va(base, 2 * G);
  CHECK(b.live_reservations() == 0);
  CHECK_THROWS_AS(b.free_va(base, 2 * G), DriverError);  // double free
}

TEST_CASE("host backend: map, set access, unmap round trip keeps the handle's data",
          "[host_backend]") {
  HostBackend b;
  const std::uintptr_t base = b.reserve(4 * G, G);
  const vmm::PhysicalHandle h = b.create(2 * G);
  b.map(base, 2 * G, h);
  CHECK(b.mapped_bytes() == 2 * G);
  const vmm::LiveObjects live = b.live_objects();
  CHECK(live.handles == 1);
  CHECK(live.handle_bytes == 2 * G);
  CHECK(live.reservations == 1);
  CHECK(live.reserved_bytes == 4 * G);
  CHECK(live.mapped_bytes == 2 * G);
  b.set_access(base, 2 * G);
  for (std::size_t i = 0; i < 2 * G; i += 4096) ptr(base)[i] = static_cast<std::uint8_t>(i >> 12);
  b.unmap(base, 2 * G);
  CHECK(b.mapped_bytes() == 0);

  // Physical memory outlives its mapping: map it elsewhere, the bytes are there.
  b.map(base + 2 * G, 2 * G, h);
  b.set_access(base + 2 * G, 2 * G);
  bool same = true;
  for (std::size_t i = 0; i < 2 * G; i += 4096) {
    same = same && ptr(base + 2 * G)[i] == static_cast<std::uint8_t>(i >> 12);
  }
  CHECK(same);
  b.unmap(base + 2 * G, 2 * G);
  b.release(h);
  b.free_va(base, 4 * G);
  CHECK(b.live_handles() == 0);
  CHECK(b.created_bytes() == 0);
  CHECK(b.live_objects() == vmm::LiveObjects{});
}

TEST_CASE("host backend: one handle mapped at two addresses aliases the same bytes",
          "[host_backend]") {
  HostBackend b;
  const std::uintptr_t r1 = b.reserve(G, G);
  const std::uintptr_t r2 = b.reserve(G, G);
  const vmm::PhysicalHandle h = b.create(G);
  b.map(r1, G, h);
  b.map(r2, G, h);
  b.set_access(r1, G);
  b.set_access(r2, G);
  CHECK(b.mapped_bytes() == 2 * G);
  CHECK(b.created_bytes() == G);  // one handle, two mappings

  std::memset(ptr(r1), 0xab, G);
  CHECK(ptr(r2)[0] == 0xab);
  CHECK(ptr(r2)[G - 1] == 0xab);
  ptr(r2)[12345] = 0x11;
  CHECK(ptr(r1)[12345] == 0x11);

  // Unmapping one alias leaves the other intact.
  b.unmap(r1, G);
  CHECK(ptr(r2)[12345] == 0x11);
  CHECK(ptr(r2)[0] == 0xab);
  b.unmap(r2, G);
  b.release(h);
  b.free_va(r1, G);
  b.free_va(r2, G);
}

TEST_CASE("host backend: use after unmap faults", "[host_backend]") {
  HostBackend b;
  const std::uintptr_t base = b.reserve(G, G);
  const vmm::PhysicalHandle h = b.create(G);
  b.map(base, G, h);
  b.set_access(base, G);
  ptr(base)[0] = 1;
  b.unmap(base, G);
  CHECK(signal_in_child([&] { *reinterpret_cast<volatile std::uint8_t*>(base) = 2; }) == SIGSEGV);
  CHECK(signal_in_child([&] {
          const volatile std::uint8_t x = *reinterpret_cast<volatile std::uint8_t*>(base + 100);
          (void)x;
        }) == SIGSEGV);
  // The VA is still reserved: it can be mapped again.
  b.map(base, G, h);
  b.set_access(base, G);
  CHECK(ptr(base)[0] == 1);
  b.unmap(base, G);
  b.release(h);
  b.free_va(base, G);
}

TEST_CASE("host backend: map rejects what the driver rejects and changes nothing",
          "[host_backend]") {
  HostBackend b;
  const std::uintptr_t base = b.reserve(4 * G, G);
  const std::uintptr_t other = b.reserve(2 * G, G);
  const vmm::PhysicalHandle h1 = b.create(G);
  const vmm::PhysicalHandle h2 = b.create(G);
  const vmm::PhysicalHandle big = b.create(2 * G);
  b.map(base + G, G, h1);
  b.set_access(base + G, G);
  std::memset(ptr(base + G), 0x5a, G);
  const std::uint64_t maps = b.calls(BackendCall::map);

  SECTION("double map") {
    const DriverError e = expect_throw<DriverError>([&] { b.map(base + G, G, h2); });
    CHECK(e.call() == "map");
    CHECK(contains(e.what(), "overlaps"));
  }
  SECTION("overlapping the start of a mapping") {
    CHECK_THROWS_AS(b.map(base, 2 * G, big), DriverError);
  }
  SECTION("overlapping the end of a mapping") {
    CHECK_THROWS_AS(b.map(base + G, 2 * G, big), DriverError);
  }
  SECTION("starting inside a mapping") {
    // A 2-chunk mapping at base+2G; map one chunk over its second half.
    b.map(base + 2 * G, 2 * G, big);
    CHECK_THROWS_AS(b.map(base + 3 * G, G, h2), DriverError);
    b.unmap(base + 2 * G, 2 * G);
  }
  SECTION("outside any reservation") {
    const std::uintptr_t gone = b.reserve(G, G);
    b.free_va(gone, G);
    CHECK_THROWS_AS(b.map(gone, G, h2), DriverError);
  }
  SECTION("running off the end of the reservation") {
    CHECK_THROWS_AS(b.map(base + 3 * G, 2 * G, big), DriverError);
  }
  SECTION("misaligned") { CHECK_THROWS_AS(b.map(base + 4096, G, h2), DriverError); }
  SECTION("size is not the handle's") {
    CHECK_THROWS_AS(b.map(base + 2 * G, 2 * G, h2), DriverError);
  }
  SECTION("unknown handle") {
    CHECK_THROWS_AS(b.map(base, G, vmm::PhysicalHandle{999999}), DriverError);
  }
  SECTION("released handle") {
    b.release(h2);
    CHECK_THROWS_AS(b.map(base, G, h2), DriverError);
    CHECK_THROWS_AS(b.release(h2), DriverError);  // double release
  }

  CHECK(b.calls(BackendCall::map) >= maps + 1);  // failed calls count too
  CHECK(b.mapped_bytes() == G);
  CHECK(ptr(base + G)[0] == 0x5a);  // the old mapping is untouched
  CHECK(ptr(base + G)[G - 1] == 0x5a);
  CHECK(signal_in_child([&] { *reinterpret_cast<volatile std::uint8_t*>(base) = 1; }) == SIGSEGV);

  b.unmap(base + G, G);
  b.release(h1);
  if (b.live_handles() == 2) b.release(h2);
  b.release(big);
  b.free_va(base, 4 * G);
  b.free_va(other, 2 * G);
  CHECK(b.live_handles() == 0);
}

TEST_CASE("host backend: unmap must cover whole mappings", "[host_backend]") {
  HostBackend b;
  const std::uintptr_t base = b.reserve(6 * G, G);
  const vmm::PhysicalHandle big = b.create(2 * G);
  const vmm::PhysicalHandle small = b.create(G);
  b.map(base, 2 * G, big);
  b.map(base + 2 * G, G, small);
  b.set_access(base, 3 * G);  // one call over two adjacent mappings
  std::memset(ptr(base), 7, 3 * G);

  DriverError e = expect_throw<DriverError>([&] { b.unmap(base, G); });
  CHECK(e.call() == "unmap");
  CHECK(contains(e.what(), "splits"));
  CHECK_THROWS_AS(b.unmap(base + G, G), DriverError);               // the second half
  CHECK_THROWS_AS(b.unmap(base, 4 * G), DriverError);               // runs past the mappings
  CHECK_THROWS_AS(b.unmap(base + 4 * G, G), DriverError);           // nothing mapped
  CHECK_THROWS_AS(b.set_access(base + 2 * G, 2 * G), DriverError);  // partly unmapped
  CHECK(b.mapped_bytes() == 3 * G);
  CHECK(ptr(base)[0] == 7);
  CHECK(ptr(base)[3 * G - 1] == 7);

  b.unmap(base, 3 * G);  // whole mappings back to back: fine
  CHECK(b.mapped_bytes() == 0);
  b.release(big);
  b.release(small);
  b.free_va(base, 6 * G);
}

TEST_CASE("host backend: simulated capacity", "[host_backend]") {
  HostBackend::Options o;
  o.device_memory = 8 * MiB;
  HostBackend b(o);
  const vmm::PhysicalHandle a = b.create(4 * MiB);
  const vmm::PhysicalHandle c = b.create(2 * MiB);
  CHECK(b.memory_info().free_bytes == 2 * MiB);

  const vmm::DeviceOutOfMemoryError e =
      expect_throw<vmm::DeviceOutOfMemoryError>([&] { b.create(4 * MiB); });
  CHECK(contains(e.what(), "out of memory"));
  CHECK(e.status() == VMM_ERROR_DRIVER);
  CHECK(b.live_handles() == 2);
  CHECK_THROWS_AS(b.create(4 * MiB), DriverError);  // it is a DriverError too

  const vmm::PhysicalHandle d = b.create(2 * MiB);  // exactly fills it
  CHECK(b.memory_info().free_bytes == 0);
  b.release(a);
  CHECK(b.memory_info().free_bytes == 4 * MiB);
  const vmm::PhysicalHandle f = b.create(4 * MiB);
  b.release(c);
  b.release(d);
  b.release(f);
  CHECK(b.memory_info().free_bytes == 8 * MiB);
}

TEST_CASE("host backend: releasing a mapped handle frees it at the last unmap", "[host_backend]") {
  HostBackend::Options o;
  o.device_memory = 4 * MiB;
  HostBackend b(o);
  const std::uintptr_t base = b.reserve(2 * G, G);
  const vmm::PhysicalHandle h = b.create(G);
  b.map(base, G, h);
  b.map(base + G, G, h);
  b.set_access(base, 2 * G);
  ptr(base)[0] = 42;
  b.release(h);
  CHECK(b.live_handles() == 0);
  CHECK(b.memory_info().free_bytes == 2 * MiB);  // still held by its mappings
  CHECK(ptr(base + G)[0] == 42);                 // and still readable
  CHECK_THROWS_AS(b.map(base, G, h), DriverError);

  b.unmap(base, G);
  CHECK(b.created_bytes() == G);
  b.unmap(base + G, G);
  CHECK(b.created_bytes() == 0);
  CHECK(b.memory_info().free_bytes == 4 * MiB);
  b.free_va(base, 2 * G);
}

TEST_CASE("host backend: counts every call of each kind", "[host_backend]") {
  HostBackend b;
  for (int k = 0; k < vmm::kBackendCallKinds; ++k) {
    CHECK(b.calls(static_cast<BackendCall>(k)) == 0);
  }
  {
    Mapped m(b, G);
    const vmm::FenceHandle f = b.record_fence(nullptr);
    CHECK(b.fence_completed(f));
    b.wait_fence(f);
    b.destroy_fence(f);
  }
  CHECK_THROWS_AS(b.unmap(0, G), DriverError);
  for (BackendCall k :
       {BackendCall::reserve, BackendCall::free_va, BackendCall::create, BackendCall::release,
        BackendCall::map, BackendCall::set_access, BackendCall::record_fence,
        BackendCall::query_fence, BackendCall::wait_fence}) {
    CHECK(b.calls(k) == 1);
  }
  CHECK(b.calls(BackendCall::unmap) == 2);
  CHECK(b.live_fences() == 0);
}

TEST_CASE("host backend: concurrent map and unmap from several threads", "[host_backend]") {
  HostBackend b;
  const std::uintptr_t base = b.reserve(16 * G, G);
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::uintptr_t mine = base + static_cast<std::size_t>(t) * 4 * G;
      for (int i = 0; i < 20; ++i) {
        const vmm::PhysicalHandle h = b.create(G);
        const std::uintptr_t va = mine + static_cast<std::size_t>(i % 4) * G;
        b.map(va, G, h);
        b.set_access(va, G);
        ptr(va)[i] = static_cast<std::uint8_t>(t);
        if (ptr(va)[i] != t) ++errors;
        b.unmap(va, G);
        b.release(h);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(errors.load() == 0);
  CHECK(b.mapped_bytes() == 0);
  CHECK(b.live_handles() == 0);
  b.free_va(base, 16 * G);
}

TEST_CASE("host backend: destructor releases whatever is left", "[host_backend]") {
  const int fds_before = open_fds();
  std::atomic<bool> ran{false};
  {
    HostBackend b;
    const std::uintptr_t base = b.reserve(4 * G, G);
    const vmm::PhysicalHandle h = b.create(G);
    b.create(G);
    b.map(base, G, h);
    b.set_access(base, G);
    const vmm::Stream s = b.create_stream();
    b.enqueue(s, [&] {
      std::this_thread::sleep_for(20ms);
      ptr(base)[0] = 1;  // queued work still runs before the memory goes
      ran = true;
    });
    b.record_fence(s);
  }
  CHECK(ran.load());
  CHECK(open_fds() == fds_before);
}
