// FaultInjectingBackend over HostBackend: a fault fires at exactly the armed
// n-th call of its kind, once, with a driver-shaped error, and the inner
// backend never sees the failed call. The last case shows the intended use:
// inject at every call of an operation and check nothing leaks.
#include <atomic>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/backend/host_backend.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "vmmalloc/errors.hpp"

namespace {

using vmm::BackendCall;
using vmm::DriverError;
using vmm::FaultInjectingBackend;
using vmm::HostBackend;
using vmm::MiB;

constexpr std::size_t G = 2 * MiB;

using vmm::test::contains;
using vmm::test::expect_throw;

// Runs `f` (one call through the wrapper) and stores in *inner_calls how many
// calls of `kind` the inner backend saw meanwhile, also when `f` throws.
template <class F>
void measured(HostBackend& host, BackendCall kind, std::uint64_t* inner_calls, F&& f) {
  const std::uint64_t before = host.calls(kind);
  try {
    f();
  } catch (...) {
    *inner_calls = host.calls(kind) - before;
    throw;
  }
  *inner_calls = host.calls(kind) - before;
}

// Makes one call of `kind` through `b`; whatever it needs is prepared and
// cleaned up on `host` directly, also when the call throws, so nothing leaks.
void call_once(BackendCall kind, FaultInjectingBackend& b, HostBackend& host,
               std::uint64_t* inner_calls) {
  switch (kind) {
    case BackendCall::reserve: {
      std::uintptr_t va = 0;
      measured(host, kind, inner_calls, [&] { va = b.reserve(G, G); });
      host.free_va(va, G);
      break;
    }
    case BackendCall::free_va: {
      const std::uintptr_t va = host.reserve(G, G);
      try {
        measured(host, kind, inner_calls, [&] { b.free_va(va, G); });
      } catch (...) {
        host.free_va(va, G);
        throw;
      }
      break;
    }
    case BackendCall::create: {
      vmm::PhysicalHandle h;
      measured(host, kind, inner_calls, [&] { h = b.create(G); });
      host.release(h);
      break;
    }
    case BackendCall::release: {
      const vmm::PhysicalHandle h = host.create(G);
      try {
        measured(host, kind, inner_calls, [&] { b.release(h); });
      } catch (...) {
        host.release(h);
        throw;
      }
      break;
    }
    case BackendCall::map:
    case BackendCall::unmap:
    case BackendCall::set_access: {
      const std::uintptr_t va = host.reserve(G, G);
      const vmm::PhysicalHandle h = host.create(G);
      if (kind != BackendCall::map) host.map(va, G, h);
      std::exception_ptr error;
      try {
        measured(host, kind, inner_calls, [&] {
          if (kind == BackendCall::map) b.map(va, G, h);
          if (kind == BackendCall::unmap) b.unmap(va, G);
          if (kind == BackendCall::set_access) b.set_access(va, G);
        });
      } catch (...) {
        error = std::current_exception();
      }
      if (host.mapped_bytes() != 0) host.unmap(va, G);
      host.release(h);
      host.free_va(va, G);
      if (error) std::rethrow_exception(error);
      break;
    }
    case BackendCall::record_fence: {
      vmm::FenceHandle f;
      measured(host, kind, inner_calls, [&] { f = b.record_fence(nullptr); });
      host.destroy_fence(f);
      break;
    }
    case BackendCall::query_fence:
    case BackendCall::wait_fence: {
      const vmm::FenceHandle f = host.record_fence(nullptr);
      try {
        measured(host, kind, inner_calls, [&] {
          if (kind == BackendCall::query_fence) b.fence_completed(f);
          if (kind == BackendCall::wait_fence) b.wait_fence(f);
        });
      } catch (...) {
        host.destroy_fence(f);
        throw;
      }
      host.destroy_fence(f);
      break;
    }
    case BackendCall::can_access_peer: {
      measured(host, kind, inner_calls, [&] { (void)b.can_access_peer(host.device()); });
      break;
    }
    case BackendCall::export_handle:
    case BackendCall::import_handle: {
      const vmm::PhysicalHandle h = host.create(G);
      const int exported = kind == BackendCall::import_handle ? host.export_handle(h) : -1;
      int fd = -1;
      vmm::PhysicalHandle imported;
      std::exception_ptr error;
      try {
        measured(host, kind, inner_calls, [&] {
          if (kind == BackendCall::export_handle) fd = b.export_handle(h);
          if (kind == BackendCall::import_handle) imported = b.import_handle(exported, G);
        });
      } catch (...) {
        error = std::current_exception();
      }
      if (fd >= 0) ::close(fd);
      if (exported >= 0) ::close(exported);
      if (imported.value != 0) host.release(imported);
      host.release(h);
      if (error) std::rethrow_exception(error);
      break;
    }
    case BackendCall::alloc_pinned: {
      void* p = nullptr;
      measured(host, kind, inner_calls, [&] { p = b.alloc_pinned(4096); });
      host.free_pinned(p, 4096);
      break;
    }
    case BackendCall::create_stream: {
      vmm::Stream s = nullptr;
      measured(host, kind, inner_calls, [&] { s = b.create_copy_stream(); });
      host.destroy_copy_stream(s);
      break;
    }
    case BackendCall::copy: {
      void* src = host.alloc_pinned(4096);
      void* dst = host.alloc_pinned(4096);
      const vmm::Stream s = host.create_copy_stream();
      std::exception_ptr error;
      try {
        measured(host, kind, inner_calls, [&] { b.copy(dst, src, 4096, s); });
      } catch (...) {
        error = std::current_exception();
      }
      host.destroy_copy_stream(s);  // runs the copy first
      host.free_pinned(dst, 4096);
      host.free_pinned(src, 4096);
      if (error) std::rethrow_exception(error);
      break;
    }
    case BackendCall::count_:
      break;
  }
}

const char* driver_name(BackendCall kind) {
  switch (kind) {
    case BackendCall::reserve:
      return "cuMemAddressReserve";
    case BackendCall::free_va:
      return "cuMemAddressFree";
    case BackendCall::create:
      return "cuMemCreate";
    case BackendCall::release:
      return "cuMemRelease";
    case BackendCall::map:
      return "cuMemMap";
    case BackendCall::unmap:
      return "cuMemUnmap";
    case BackendCall::set_access:
      return "cuMemSetAccess";
    case BackendCall::record_fence:
      return "cuEventRecord";
    case BackendCall::query_fence:
      return "cuEventQuery";
    case BackendCall::wait_fence:
      return "cuEventSynchronize";
    case BackendCall::can_access_peer:
      return "cuDeviceCanAccessPeer";
    case BackendCall::export_handle:
      return "cuMemExportToShareableHandle";
    case BackendCall::import_handle:
      return "cuMemImportFromShareableHandle";
    case BackendCall::alloc_pinned:
      return "cuMemHostAlloc";
    case BackendCall::create_stream:
      return "cuStreamCreate";
    case BackendCall::copy:
      return "cuMemcpyAsync";
    case BackendCall::count_:
      break;
  }
  return "";
}

}  // namespace

TEST_CASE("fault injection: forwards everything when disarmed", "[fault_injection]") {
  HostBackend::Options o;
  o.device = 2;
  o.device_memory = 32 * MiB;
  HostBackend host(o);
  FaultInjectingBackend b(host);
  CHECK(std::string(b.name()) == "host");
  CHECK(b.device() == 2);
  CHECK(b.granularity() == G);
  CHECK(b.memory_info().total_bytes == 32 * MiB);
  CHECK(&b.inner() == &host);

  for (int k = 0; k < vmm::kBackendCallKinds; ++k) {
    const auto kind = static_cast<BackendCall>(k);
    std::uint64_t inner_calls = 0;
    call_once(kind, b, host, &inner_calls);
    CHECK(b.calls(kind) == 1);
    CHECK(inner_calls == 1);  // forwarded
  }
  CHECK_FALSE(b.fired());
  CHECK(host.live_handles() == 0);
  CHECK(host.live_reservations() == 0);
  CHECK(host.live_fences() == 0);
}

TEST_CASE("fault injection: fires exactly at the n-th call, once, without calling through",
          "[fault_injection]") {
  HostBackend host;
  FaultInjectingBackend b(host);
  const std::uintptr_t base = host.reserve(8 * G, G);
  std::vector<vmm::PhysicalHandle> handles;
  for (int i = 0; i < 4; ++i) handles.push_back(host.create(G));

  b.fail_nth(BackendCall::map, 3);
  CHECK_FALSE(b.fired());
  b.map(base, G, handles[0]);
  b.map(base + G, G, handles[1]);
  CHECK_FALSE(b.fired());
  const DriverError e = expect_throw<DriverError>([&] { b.map(base + 2 * G, G, handles[2]); });
  CHECK(b.fired());
  CHECK(e.call() == "cuMemMap (injected)");
  CHECK(e.code() == 999);
  CHECK(e.status() == VMM_ERROR_DRIVER);
  CHECK(contains(e.what(), "cuMemMap"));
  CHECK(contains(e.what(), "injected"));
  CHECK(b.calls(BackendCall::map) == 3);
  CHECK(host.calls(BackendCall::map) == 2);  // the underlying call was not made
  CHECK(host.mapped_bytes() == 2 * G);

  // One-shot: the next call goes through.
  b.map(base + 2 * G, G, handles[2]);
  b.map(base + 3 * G, G, handles[3]);
  CHECK(host.mapped_bytes() == 4 * G);
  CHECK(b.fired());  // until re-armed or disarmed

  b.unmap(base, 4 * G);
  for (auto h : handles) b.release(h);
  b.free_va(base, 8 * G);
  CHECK(host.live_handles() == 0);
  CHECK(host.live_reservations() == 0);
}

TEST_CASE("fault injection: every kind can be injected", "[fault_injection]") {
  HostBackend host;
  FaultInjectingBackend b(host);
  for (int k = 0; k < vmm::kBackendCallKinds; ++k) {
    const auto kind = static_cast<BackendCall>(k);
    CAPTURE(vmm::backend_call_name(kind));
    std::uint64_t inner_calls = 99;
    b.fail_nth(kind, 1);
    const DriverError e =
        expect_throw<DriverError>([&] { call_once(kind, b, host, &inner_calls); });
    CHECK(b.fired());
    CHECK(e.call() == std::string(driver_name(kind)) + " (injected)");
    CHECK(e.code() == 999);
    CHECK(contains(e.what(), vmm::backend_call_name(kind)));
    CHECK(inner_calls == 0);                 // the underlying call was not made
    call_once(kind, b, host, &inner_calls);  // one-shot: goes through again
    CHECK(inner_calls == 1);
  }
  CHECK(host.live_handles() == 0);
  CHECK(host.live_reservations() == 0);
  CHECK(host.mapped_bytes() == 0);
  CHECK(host.live_fences() == 0);
}

TEST_CASE("fault injection: out of memory on create", "[fault_injection]") {
  HostBackend host;
  FaultInjectingBackend b(host);
  b.fail_nth_as_oom(BackendCall::create, 2);
  const vmm::PhysicalHandle first = b.create(G);
  const vmm::DeviceOutOfMemoryError e =
      expect_throw<vmm::DeviceOutOfMemoryError>([&] { b.create(G); });
  CHECK(e.call() == "cuMemCreate (injected)");
  CHECK(contains(e.what(), "out of memory"));
  CHECK(host.calls(BackendCall::create) == 1);
  CHECK(host.live_handles() == 1);
  b.release(first);
}

TEST_CASE("fault injection: counts from arming, disarm, re-arm", "[fault_injection]") {
  HostBackend host;
  FaultInjectingBackend b(host);
  std::vector<vmm::PhysicalHandle> hs;
  for (int i = 0; i < 5; ++i) hs.push_back(b.create(G));
  b.fail_nth(BackendCall::create, 2);  // the 7th create overall
  hs.push_back(b.create(G));
  CHECK_THROWS_AS(b.create(G), DriverError);
  CHECK(b.calls(BackendCall::create) == 7);
  CHECK(host.calls(BackendCall::create) == 6);

  b.fail_nth(BackendCall::create, 1);
  CHECK_FALSE(b.fired());  // re-arming resets it
  b.disarm();
  hs.push_back(b.create(G));
  CHECK_FALSE(b.fired());

  // Re-arming a kind replaces its earlier fault; kinds are independent.
  b.fail_nth(BackendCall::create, 1);
  b.fail_nth(BackendCall::create, 3);
  b.fail_nth(BackendCall::release, 1);
  hs.push_back(b.create(G));
  hs.push_back(b.create(G));
  CHECK_THROWS_AS(b.release(hs.back()), DriverError);
  CHECK_THROWS_AS(b.create(G), DriverError);
  b.disarm();
  for (auto h : hs) b.release(h);
  CHECK(host.live_handles() == 0);

  CHECK_THROWS_AS(b.fail_nth(BackendCall::map, 0), vmm::InvalidArgumentError);
  CHECK_THROWS_AS(b.fail_nth(BackendCall::count_, 1), vmm::InvalidArgumentError);
}

TEST_CASE("fault injection: destroy_fence is never injected", "[fault_injection]") {
  HostBackend host;
  FaultInjectingBackend b(host);
  for (int k = 0; k < vmm::kBackendCallKinds; ++k) b.fail_nth(static_cast<BackendCall>(k), 2);
  const vmm::FenceHandle f = b.record_fence(nullptr);
  b.destroy_fence(f);
  CHECK(host.live_fences() == 0);
  CHECK_FALSE(b.fired());
  b.memory_info();  // not a counted kind either
  CHECK_FALSE(b.fired());
}

TEST_CASE("fault injection: owns an inner backend given by unique_ptr", "[fault_injection]") {
  auto owned = std::make_unique<HostBackend>();
  HostBackend* host = owned.get();
  FaultInjectingBackend b(std::move(owned));
  CHECK(&b.inner() == host);
  b.fail_nth(BackendCall::reserve, 1);
  CHECK_THROWS_AS(b.reserve(G, G), DriverError);
  CHECK(host->live_reservations() == 0);
  CHECK_THROWS_AS(FaultInjectingBackend(std::unique_ptr<vmm::Backend>{}),
                  vmm::InvalidArgumentError);
}

TEST_CASE("fault injection: exactly one of many concurrent calls fires", "[fault_injection]") {
  HostBackend host;
  FaultInjectingBackend b(host);
  b.fail_nth(BackendCall::create, 50);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 40; ++i) {
        try {
          b.release(b.create(G));
        } catch (const DriverError&) {
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures.load() == 1);
  CHECK(b.fired());
  CHECK(b.calls(BackendCall::create) == 160);
  CHECK(host.calls(BackendCall::create) == 159);
  CHECK(host.live_handles() == 0);
}

// The intended use: an operation that rolls back on failure, injected at
// each of its calls in turn, leaves nothing behind.
TEST_CASE("fault injection: a rollback loop over every call leaves no leak", "[fault_injection]") {
  HostBackend host;
  FaultInjectingBackend b(host);
  const std::uintptr_t base = host.reserve(4 * G, G);

  // Maps two fresh chunks at base and grants access; all or nothing.
  auto grow = [&] {
    std::vector<vmm::PhysicalHandle> created;
    std::size_t mapped = 0;
    try {
      for (int i = 0; i < 2; ++i) created.push_back(b.create(G));
      for (; mapped < created.size(); ++mapped) b.map(base + mapped * G, G, created[mapped]);
      b.set_access(base, 2 * G);
    } catch (...) {
      for (std::size_t i = 0; i < mapped; ++i) host.unmap(base + i * G, G);
      for (auto h : created) host.release(h);
      throw;
    }
    return created;
  };

  int faults = 0;
  for (BackendCall kind : {BackendCall::create, BackendCall::map, BackendCall::set_access}) {
    for (std::uint64_t n = 1;; ++n) {
      b.fail_nth(kind, n);
      try {
        const std::vector<vmm::PhysicalHandle> hs = grow();
        host.unmap(base, 2 * G);
        for (auto h : hs) host.release(h);
      } catch (const DriverError&) {
        ++faults;
      }
      CHECK(host.live_handles() == 0);
      CHECK(host.mapped_bytes() == 0);
      if (!b.fired()) break;
    }
  }
  CHECK(faults == 5);  // 2 creates + 2 maps + 1 set_access
  b.disarm();
  host.free_va(base, 4 * G);
}

TEST_CASE("fault injection: both set_access forms count as set_access", "[fault_injection]") {
  HostBackend::Options o;
  o.device_count = 2;
  HostBackend host(o);
  FaultInjectingBackend b(host);
  CHECK(b.device_count() == 2);
  const std::uintptr_t va = host.reserve(G, G);
  const vmm::PhysicalHandle h = host.create(G);
  host.map(va, G, h);
  const int both[] = {0, 1};
  b.fail_nth(BackendCall::set_access, 1);
  CHECK_THROWS_AS(b.set_access(va, G, both), DriverError);
  CHECK(host.access_devices(va).empty());  // the inner call was not made
  b.set_access(va, G, both);
  CHECK(host.access_devices(va) == std::vector<int>{0, 1});
  CHECK(b.calls(BackendCall::set_access) == 2);
  host.unmap(va, G);
  host.release(h);
  host.free_va(va, G);
}
