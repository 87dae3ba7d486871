// Several devices in one process, on the host backend: the peer_access
// option, the backends' peer calls, PeerAccessBackend's grants (to what is
// mapped now and what is mapped later, by workspaces and the heap alike) and
// the per-device VA budget. HostBackend simulates N devices sharing the
// host's memory and records, per mapping, which devices were granted access
// (access_devices()), which is what these tests read.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "allocator/vm/address_space.hpp"
#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/backend/host_backend.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/backend/peer_access_backend.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/workspace.hpp"

namespace {

using vmm::Config;
using vmm::GiB;
using vmm::HostBackend;
using vmm::MiB;
using vmm::PeerAccessMode;
using vmm::TiB;
using vmm::test::contains;
using vmm::test::expect_throw;

constexpr std::size_t G = 2 * MiB;

using Devices = std::vector<int>;

HostBackend::Options host_options(int device, int count, Devices unreachable = {}) {
  HostBackend::Options o;
  o.device = device;
  o.device_count = count;
  o.unreachable_peers = std::move(unreachable);
  o.device_memory = 1 * GiB;
  return o;
}

Config small_config() {
  Config c;
  c.va_reservation_size = 1 * GiB;
  c.pool_cache_limit = 0;
  return c;
}

std::uintptr_t address(const vmm::Workspace& ws, std::size_t offset) {
  return reinterpret_cast<std::uintptr_t>(ws.data()) + offset;
}

}  // namespace

// ------------------------------------------------------------ the option

TEST_CASE("peer access: the peer_access option", "[peer_access][config]") {
  CHECK(Config{}.peer_access == PeerAccessMode::none);
  CHECK(Config::parse("peer_access:none").peer_access == PeerAccessMode::none);
  CHECK(Config::parse("peer_access:ALL").peer_access == PeerAccessMode::all);
  CHECK(Config::parse("peer_access: None ").peer_access == PeerAccessMode::none);
  const Config list = Config::parse("peer_access: 3 + 0+ 12");
  CHECK(list.peer_access == PeerAccessMode::list);
  CHECK(list.peer_access_devices == Devices{3, 0, 12});
  CHECK(Config::parse("peer_access:63").peer_access_devices == Devices{63});
  CHECK(Config::parse("peer_access:007").peer_access_devices == Devices{7});
  // Back to none clears the list; the text round-trips.
  Config c = list;
  c.set("peer_access", "none");
  CHECK(c.peer_access_devices.empty());
  for (const char* text : {"none", "all", "0", "3+0+12", "63+1"}) {
    const Config parsed = Config::parse(std::string("peer_access:") + text);
    CHECK(Config::parse(parsed.to_string()) == parsed);
    CHECK(contains(parsed.to_string(), std::string(",peer_access:") + text));
  }

  const std::string accepted =
      "expected none, all, or device ordinals 0 to 63 joined with + like 0+2+3 (none listed "
      "twice)";
  struct Bad {
    const char* value;
    const char* reason;  // "" when the quoted value says it all
  };
  for (const Bad& bad : {Bad{"", ""}, Bad{"some", ""}, Bad{"-1", ""}, Bad{"64", ""},
                         Bad{"1.5", ""}, Bad{"0+", "empty list item"},
                         Bad{"0+x", "x is not a device ordinal"},
                         Bad{"0+64", "64 is not a device ordinal"},
                         Bad{"2+0+2", "2 is listed twice"}, Bad{"0 1", ""}}) {
    INFO("peer_access:" << bad.value);
    Config before = Config::parse("peer_access:1");
    const vmm::ConfigError e = expect_throw<vmm::ConfigError>(
        [&] { before.set("peer_access", bad.value); });
    CHECK(e.key() == "peer_access");
    CHECK(contains(e.what(), std::string("bad value \"") + bad.value + "\" for peer_access"));
    CHECK(contains(e.what(), accepted));
    CHECK(contains(e.what(), bad.reason));
    CHECK(before.peer_access_devices == Devices{1});  // unchanged
  }

  // Fields set from code are checked by validate().
  Config odd;
  odd.peer_access_devices = {1};  // a list without the list mode
  CHECK_THROWS_AS(odd.validate(), vmm::ConfigError);
  odd.peer_access = PeerAccessMode::list;
  CHECK_NOTHROW(odd.validate());
  odd.peer_access_devices.clear();
  CHECK_THROWS_AS(odd.validate(), vmm::ConfigError);
  odd.peer_access_devices = {5, 5};
  CHECK(contains(expect_throw<vmm::ConfigError>([&] { odd.validate(); }).what(),
                 "5 is listed twice"));
}

// ------------------------------------------------------------ the backends

TEST_CASE("peer access: the host backend simulates several devices", "[peer_access]") {
  HostBackend host(host_options(1, 3, {2}));
  CHECK(host.device() == 1);
  CHECK(host.device_count() == 3);
  CHECK(host.can_access_peer(0));
  CHECK(host.can_access_peer(1));
  CHECK_FALSE(host.can_access_peer(2));  // listed unreachable
  CHECK(host.calls(vmm::BackendCall::can_access_peer) == 3);
  CHECK_THROWS_AS(host.can_access_peer(3), vmm::InvalidArgumentError);
  CHECK_THROWS_AS(host.can_access_peer(-1), vmm::InvalidArgumentError);

  const std::uintptr_t va = host.reserve(2 * G, G);
  const vmm::PhysicalHandle a = host.create(G);
  const vmm::PhysicalHandle b = host.create(G);
  host.map(va, G, a);
  host.map(va + G, G, b);
  CHECK(host.access_devices(va).empty());
  host.set_access(va, G);
  CHECK(host.access_devices(va) == Devices{1});
  const int both[] = {0, 1};
  host.set_access(va, 2 * G, both);
  CHECK(host.access_devices(va) == Devices{0, 1});
  CHECK(host.access_devices(va + G + 4096) == Devices{0, 1});
  CHECK(host.access_devices(va + 2 * G).empty());
  std::memset(reinterpret_cast<void*>(va), 7, 2 * G);  // readable and writable

  // A device that does not exist or cannot reach: the driver's error, no change.
  for (const Devices& bad : {Devices{0, 2}, Devices{3}, Devices{-1}}) {
    const vmm::DriverError e =
        expect_throw<vmm::DriverError>([&] { host.set_access(va + G, G, bad); });
    CHECK(contains(e.what(), "set_access"));
  }
  CHECK(host.access_devices(va + G) == Devices{0, 1});

  host.unmap(va, 2 * G);
  CHECK(host.access_devices(va).empty());
  host.release(a);
  host.release(b);
  host.free_va(va, 2 * G);

  CHECK_THROWS_AS(HostBackend(host_options(3, 3)), vmm::InvalidArgumentError);
  CHECK_THROWS_AS(HostBackend(host_options(-1, 2)), vmm::InvalidArgumentError);
  CHECK_THROWS_AS(HostBackend(host_options(0, 65)), vmm::InvalidArgumentError);
  CHECK(HostBackend(host_options(5, 0)).device_count() == 6);  // 0: just enough
  CHECK(HostBackend().device_count() == 1);
}

TEST_CASE("peer access: grants reach what is mapped now and what is mapped later",
          "[peer_access]") {
  HostBackend host(host_options(0, 4, {3}));
  vmm::PeerAccessBackend access(host);
  CHECK(access.access_devices() == Devices{0});

  const std::uintptr_t va = host.reserve(8 * G, G);
  std::vector<vmm::PhysicalHandle> hs;
  for (int i = 0; i < 4; ++i) hs.push_back(host.create(G));
  // Two runs mapped before the grant, with a hole between them.
  access.map(va, G, hs[0]);
  access.map(va + G, G, hs[1]);
  access.map(va + 3 * G, G, hs[2]);
  access.set_access(va, 2 * G);
  access.set_access(va + 3 * G, G);
  CHECK(host.access_devices(va) == Devices{0});
  const auto set_access_calls = host.calls(vmm::BackendCall::set_access);

  const int peers[] = {2, 0, 2};  // the device itself and repeats are skipped
  access.grant_peers(peers);
  CHECK(access.access_devices() == Devices{0, 2});
  CHECK(host.access_devices(va) == Devices{0, 2});
  CHECK(host.access_devices(va + G) == Devices{0, 2});
  CHECK(host.access_devices(va + 3 * G) == Devices{0, 2});
  CHECK(host.calls(vmm::BackendCall::set_access) == set_access_calls + 2);  // one per run

  // Mapped after the grant: set_access grants the whole set in one call.
  access.map(va + 5 * G, G, hs[3]);
  access.set_access(va + 5 * G, G);
  CHECK(host.access_devices(va + 5 * G) == Devices{0, 2});

  // Unmapped ranges leave the table: a later grant does not touch them.
  access.unmap(va + 3 * G, G);
  const int one[] = {1};
  access.grant_peers(one);
  CHECK(access.access_devices() == Devices{0, 2, 1});
  CHECK(host.access_devices(va + G) == Devices{0, 1, 2});
  CHECK(host.access_devices(va + 5 * G) == Devices{0, 1, 2});

  // Refused peers change nothing.
  const int unreachable[] = {1, 3};
  const vmm::NotSupportedError e =
      expect_throw<vmm::NotSupportedError>([&] { access.grant_peers(unreachable); });
  CHECK(contains(e.what(), "device 3 cannot access memory of device 0"));
  CHECK(contains(e.what(), "devices that can: 1, 2"));
  const int missing[] = {4};
  CHECK(contains(expect_throw<vmm::InvalidArgumentError>([&] { access.grant_peers(missing); })
                     .what(),
                 "peer device 4 does not exist (valid: 0 to 3)"));
  CHECK(access.access_devices() == Devices{0, 2, 1});

  access.unmap(va, 2 * G);
  access.unmap(va + 5 * G, G);
  for (auto h : hs) host.release(h);
  host.free_va(va, 8 * G);
  CHECK(host.live_objects() == vmm::LiveObjects{});
}

TEST_CASE("peer access: a failed grant adds no peer", "[peer_access][fault_injection]") {
  HostBackend host(host_options(0, 2));
  vmm::FaultInjectingBackend faults(host);
  vmm::PeerAccessBackend access(faults);
  const std::uintptr_t va = host.reserve(4 * G, G);
  const vmm::PhysicalHandle a = host.create(G);
  const vmm::PhysicalHandle b = host.create(G);
  access.map(va, G, a);
  access.map(va + 2 * G, G, b);
  access.set_access(va, G);
  access.set_access(va + 2 * G, G);

  const int peer[] = {1};
  faults.fail_nth(vmm::BackendCall::set_access, 2);  // the second run
  CHECK_THROWS_AS(access.grant_peers(peer), vmm::DriverError);
  CHECK(access.access_devices() == Devices{0});
  faults.fail_nth(vmm::BackendCall::can_access_peer, 1);
  CHECK_THROWS_AS(access.grant_peers(peer), vmm::DriverError);
  CHECK(access.access_devices() == Devices{0});
  access.grant_peers(peer);  // and then it works
  CHECK(access.access_devices() == Devices{0, 1});
  CHECK(host.access_devices(va + 2 * G) == Devices{0, 1});

  access.unmap(va, G);
  access.unmap(va + 2 * G, G);
  host.release(a);
  host.release(b);
  host.free_va(va, 4 * G);
}

// ------------------------------------------------------------ device contexts

TEST_CASE("peer access: peer_access:all in a device context", "[peer_access]") {
  Config config = small_config();
  config.peer_access = PeerAccessMode::all;
  // Device 1 of three; device 2 cannot reach it.
  HostBackend host(host_options(1, 3, {2}));
  {
    vmm::DeviceContext ctx(std::make_unique<vmm::FaultInjectingBackend>(host), config);
    CHECK(ctx.device() == 1);
    CHECK(ctx.access_devices() == Devices{1, 0});

    // A workspace: its chunks, and those of every later grow.
    vmm::Workspace ws(ctx, 256 * MiB);
    ws.grow_to(6 * MiB);
    CHECK(host.access_devices(address(ws, 0)) == Devices{0, 1});
    ws.grow_to(100 * MiB);
    CHECK(host.access_devices(address(ws, 99 * MiB)) == Devices{0, 1});
    std::memset(ws.data(), 1, ws.size());

    // The general allocator maps through the same backend.
    vmm::Allocator allocator(ctx);
    void* p = allocator.allocate(24 * MiB);
    CHECK(host.access_devices(reinterpret_cast<std::uintptr_t>(p)) == Devices{0, 1});
    allocator.deallocate(p);
    ws.release(nullptr);
  }
  CHECK(host.live_objects() == vmm::LiveObjects{});
}

TEST_CASE("peer access: granting at run time covers a workspace grown before and after",
          "[peer_access]") {
  HostBackend host(host_options(0, 2));
  {
    vmm::DeviceContext ctx(std::make_unique<vmm::FaultInjectingBackend>(host), small_config());
    CHECK(ctx.access_devices() == Devices{0});  // peer_access:none
    vmm::Workspace ws(ctx, 64 * MiB);
    ws.grow_to(10 * MiB);
    CHECK(host.access_devices(address(ws, 0)) == Devices{0});
    const int peer[] = {1};
    ctx.grant_peer_access(peer);
    CHECK(host.access_devices(address(ws, 0)) == Devices{0, 1});
    CHECK(host.access_devices(address(ws, 9 * MiB)) == Devices{0, 1});
    ws.grow_to(40 * MiB);  // a grown workspace stays accessible
    CHECK(host.access_devices(address(ws, 39 * MiB)) == Devices{0, 1});
    // A shrink then a grow takes back pending chunks or maps fresh ones:
    // either way they are accessible.
    ws.shrink_to(2 * MiB, nullptr);
    ctx.reclaimer().drain();
    ws.grow_to(30 * MiB);
    CHECK(host.access_devices(address(ws, 29 * MiB)) == Devices{0, 1});
  }
  CHECK(host.live_objects() == vmm::LiveObjects{});
}

TEST_CASE("peer access: peer_access lists are checked against the devices", "[peer_access]") {
  HostBackend host(host_options(0, 3, {2}));
  Config config = small_config();
  config.peer_access = PeerAccessMode::list;

  config.peer_access_devices = {0, 1};  // the device itself is skipped
  {
    vmm::DeviceContext ctx(std::make_unique<vmm::FaultInjectingBackend>(host), config);
    CHECK(ctx.access_devices() == Devices{0, 1});
  }
  config.peer_access_devices = {1, 5};
  vmm::ConfigError e = expect_throw<vmm::ConfigError>(
      [&] { vmm::DeviceContext(std::make_unique<vmm::FaultInjectingBackend>(host), config); });
  CHECK(e.key() == "peer_access");
  CHECK(contains(e.what(), "device 5, which does not exist"));
  CHECK(contains(e.what(), "3 device(s), 0 to 2"));

  config.peer_access_devices = {2};
  e = expect_throw<vmm::ConfigError>(
      [&] { vmm::DeviceContext(std::make_unique<vmm::FaultInjectingBackend>(host), config); });
  CHECK(contains(e.what(), "device 2, which cannot access memory of device 0"));
  CHECK(contains(e.what(), "devices that can: 1"));
  CHECK(host.live_objects() == vmm::LiveObjects{});
}

// ------------------------------------------------------------ per-device state

TEST_CASE("multi-device: each device keeps its own state", "[peer_access][multi_device]") {
  constexpr int kDevices = 4;
  std::vector<std::unique_ptr<HostBackend>> hosts;
  std::vector<std::unique_ptr<vmm::DeviceContext>> contexts;
  std::vector<std::unique_ptr<vmm::Workspace>> spaces;
  for (int d = 0; d < kDevices; ++d) {
    hosts.push_back(std::make_unique<HostBackend>(host_options(d, kDevices)));
    contexts.push_back(std::make_unique<vmm::DeviceContext>(
        std::make_unique<vmm::FaultInjectingBackend>(*hosts.back()), small_config()));
    spaces.push_back(std::make_unique<vmm::Workspace>(*contexts.back(), 32 * MiB));
    spaces.back()->grow_to(static_cast<std::size_t>(d + 1) * 4 * MiB);
    std::memset(spaces.back()->data(), d + 1, spaces.back()->size());
  }
  for (int d = 0; d < kDevices; ++d) {
    INFO("device " << d);
    CHECK(spaces[d]->device() == d);
    CHECK(contexts[d]->pool().stats().created_bytes == static_cast<std::size_t>(d + 1) * 4 * MiB);
    CHECK(hosts[d]->live_objects().mapped_bytes == static_cast<std::size_t>(d + 1) * 4 * MiB);
    const auto* p = static_cast<const unsigned char*>(spaces[d]->data());
    CHECK(std::all_of(p, p + spaces[d]->size(), [&](unsigned char v) { return v == d + 1; }));
  }
  spaces.clear();
  contexts.clear();
  for (const auto& h : hosts) CHECK(h->live_objects() == vmm::LiveObjects{});
}

TEST_CASE("multi-device: VA reservations keep to each device's share", "[multi_device]") {
  using vmm::AddressSpace;
  CHECK(AddressSpace::kProcessVaBudget == 32 * TiB);
  CHECK(AddressSpace::reservation_budget(1) == 32 * TiB);
  CHECK(AddressSpace::reservation_budget(8) == 4 * TiB);
  CHECK(AddressSpace::reservation_budget(0) == 32 * TiB);

  // Eight 141 GB devices with the default factor (4x): 564 GiB each, under
  // the 4 TiB share, so unchanged...
  Config config;
  config.va_reservation_size = 0;
  HostBackend::Options o = host_options(0, 8);
  o.device_memory = std::size_t{141} * 1000 * 1000 * 1000;
  {
    HostBackend host(o);
    AddressSpace space(host, config);
    CHECK(space.reservation_size() == vmm::align_up(4 * o.device_memory, GiB));
  }
  // ...while a factor of 64 (9 TiB each, 72 TiB for eight) is capped at the share,
  // and so is an explicit size.
  config.va_reservation_factor = 64;
  {
    HostBackend host(o);
    AddressSpace space(host, config);
    CHECK(space.reservation_size() == 4 * TiB);
    CHECK(space.stats().reservation_size == 4 * TiB);
  }
  config.va_reservation_size = 16 * TiB;
  o.device_count = 2;
  {
    HostBackend host(o);
    AddressSpace space(host, config);
    CHECK(space.reservation_size() == 16 * TiB);  // exactly the share of two
  }
  o.device_count = 4;
  {
    HostBackend host(o);
    AddressSpace space(host, config);
    CHECK(space.reservation_size() == 8 * TiB);
    CHECK(host.live_reservations() == 0);  // nothing reserved until used
  }
}
