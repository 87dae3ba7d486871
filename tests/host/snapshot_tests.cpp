// Snapshots (docs/snapshot.md), on the host backend: a snapshot of a
// context holding known workspaces, blocks and a reclaim still waiting for
// its fence, the events each layer records (and the mapped total they carry,
// checked against the backend's own count), allocation events on and off,
// out-of-memory events and snapshots, snapshot paths, the observability
// options and the C ABI. The event ring and the live socket have files of
// their own (event_ring_tests.cpp, live_socket_tests.cpp); vmmctl's own
// tests are in tests/cli.
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "allocator/record/event_ring.hpp"
#include "allocator/heap/size_classes.hpp"
#include "allocator/observe/snapshot.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/temp_dir.hpp"
#include "tests/common/test_util.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/snapshot.hpp"
#include "vmmalloc/vmmalloc.h"
#include "vmmalloc/workspace.hpp"

using namespace vmm;
using namespace vmm::test;
using Json = nlohmann::json;

namespace {

Json full_snapshot() { return Json::parse(snapshot_json("api", SnapshotDetail::full)); }

// The device entry of the snapshot holding the region based at `base`.
const Json* device_with_region(const Json& snap, std::uintptr_t base) {
  for (const Json& d : snap["devices"]) {
    for (const Json& r : d["regions"]) {
      if (r["base"] == base) return &d;
    }
  }
  return nullptr;
}

const Json* region_at(const Json& device, std::uintptr_t base) {
  for (const Json& r : device["regions"]) {
    if (r["base"] == base) return &r;
  }
  return nullptr;
}

// Whether some heap region of the snapshot holds a block at `addr`.
bool has_block(const Json& snap, std::uintptr_t addr) {
  for (const Json& d : snap["devices"]) {
    for (const Json& r : d["regions"]) {
      if (r["owner"] != "heap") continue;
      for (const Json& b : r["blocks"]) {
        if (b["addr"] == addr) return true;
      }
    }
  }
  return false;
}

// Events of the ring recorded after `since` (a count of recorded events).
std::vector<Event> events_since(std::uint64_t since) {
  const EventRing::Contents c = events::ring().read();
  std::vector<Event> out;
  const std::uint64_t first = c.recorded - c.events.size();
  for (std::size_t i = 0; i < c.events.size(); ++i) {
    if (first + i >= since) out.push_back(c.events[i]);
  }
  return out;
}

std::uint64_t recorded_now() { return events::ring().read().recorded; }

}  // namespace

// --------------------------------------------------------------- snapshot

TEST_CASE("snapshot: workspaces, blocks, pool, pending reclaims and events as made", "[snapshot]") {
  Harness h(make_host_test_device());
  const int device = h.context().device();
  const std::size_t mapped_before = h.inner().live_objects().mapped_bytes;
  const std::int64_t ring_mapped_before = events::mapped_bytes(device);
  const std::uint64_t since = recorded_now();
  Stream S = h.stream();

  Workspace ws(h.context(), 64 * MiB);
  ws.set_name("kv cache");
  CHECK(ws.name() == "kv cache");
  ws.grow_to(24 * MiB);  // chunks of 16 and 8 MiB
  const auto base = reinterpret_cast<std::uintptr_t>(ws.data());
  Allocator a(h.context());
  void* big = a.allocate(3 * MiB, S);
  void* small = a.allocate(1000, S);
  // Keep the stream busy: the 8 MiB tail a shrink detaches stays pending.
  h.device().block(S, 400);
  ws.shrink_to(2 * MiB, S);

  const Json snap = full_snapshot();
  CHECK(snap["schema"] == kSnapshotSchema);
  CHECK(snap["version"] == kSnapshotSchemaVersion);
  CHECK(snap["reason"] == "api");
  CHECK(snap["detail"] == "full");
  CHECK(snap["process"]["pid"] == ::getpid());
  const Json* dev = device_with_region(snap, base);
  REQUIRE(dev != nullptr);
  const Json& d = *dev;
  CHECK(d["device"] == device);
  CHECK(d["backend"] == "host");
  CHECK(d["granularity"] == 2 * MiB);

  const Json* r = region_at(d, base);
  REQUIRE(r != nullptr);
  CHECK((*r)["owner"] == "workspace");
  CHECK((*r)["name"] == "kv cache");
  CHECK((*r)["capacity"] == 64 * MiB);
  CHECK((*r)["size"] == 2 * MiB);
  CHECK((*r)["mapped_bytes"] == 16 * MiB);  // the chunk holding byte 2 MiB - 1 stays
  REQUIRE((*r)["chunks"].size() == 1);
  CHECK((*r)["chunks"][0]["va"] == base);
  CHECK((*r)["chunks"][0]["bytes"] == 16 * MiB);
  CHECK((*r)["pending_reclaims"] == 1);

  // The detached 8 MiB chunk waits for its fence, which is not done.
  bool found_pending = false;
  for (const Json& e : d["reclaimer"]["pending"]) {
    if (e["mappings"].size() == 1 && e["mappings"][0]["va"] == base + 16 * MiB) {
      found_pending = true;
      CHECK(e["bytes"] == 8 * MiB);
      REQUIRE(e["fences"].size() == 1);
      CHECK(e["fences"][0]["complete"] == false);
      CHECK(e["range"].is_null());
    }
  }
  CHECK(found_pending);
  CHECK(d["totals"]["pending_bytes"] == 8 * MiB);

  // Heap: both blocks live with their requested sizes.
  std::map<std::uint64_t, Json> blocks;
  std::size_t segments = 0;
  for (const Json& reg : d["regions"]) {
    if (reg["owner"] != "heap") continue;
    ++segments;
    for (const Json& b : reg["blocks"]) blocks[b["addr"]] = b;
  }
  CHECK(segments == d["totals"]["heap_segments"]);
  REQUIRE(blocks.count(reinterpret_cast<std::uintptr_t>(big)) == 1);
  REQUIRE(blocks.count(reinterpret_cast<std::uintptr_t>(small)) == 1);
  const Json& jb = blocks[reinterpret_cast<std::uintptr_t>(big)];
  CHECK(jb["state"] == "live");
  CHECK(jb["requested"] == 3 * MiB);
  CHECK(jb["size"] == a.block_size(big));
  CHECK(jb["stream"] == reinterpret_cast<std::uintptr_t>(S));
  CHECK(blocks[reinterpret_cast<std::uintptr_t>(small)]["requested"] == 1000);

  const Json& c = d["counters"];
  // The counters are VMM_ALLOCATOR_STATS's, under the keys docs/snapshot.md
  // documents (listed here so that renaming one in the list fails).
  const std::vector<std::string> documented = {"allocated_bytes.all.current",
                                               "allocated_bytes.all.peak",
                                               "requested_bytes.all.current",
                                               "requested_bytes.all.peak",
                                               "reserved_bytes.all.current",
                                               "reserved_bytes.all.peak",
                                               "vmmalloc.mapped_bytes",
                                               "vmmalloc.cached_bytes",
                                               "vmmalloc.pending_bytes",
                                               "inactive_split_bytes.all.current",
                                               "active.all.current",
                                               "allocation.all.allocated",
                                               "allocation.all.freed",
                                               "vmmalloc.stitches",
                                               "num_device_alloc",
                                               "num_device_free",
                                               "num_ooms",
                                               "vmmalloc.fenced_free_waits",
                                               "allocated_bytes.all.allocated",
                                               "allocated_bytes.all.freed",
                                               "requested_bytes.all.allocated",
                                               "requested_bytes.all.freed",
                                               "active.all.peak",
                                               "num_alloc_retries",
                                               "allocated_bytes.small_pool.current",
                                               "allocated_bytes.small_pool.peak",
                                               "allocated_bytes.small_pool.allocated",
                                               "allocated_bytes.small_pool.freed",
                                               "requested_bytes.small_pool.current",
                                               "requested_bytes.small_pool.peak",
                                               "requested_bytes.small_pool.allocated",
                                               "requested_bytes.small_pool.freed",
                                               "active.small_pool.current",
                                               "active.small_pool.peak",
                                               "allocation.small_pool.allocated",
                                               "allocation.small_pool.freed",
                                               "allocated_bytes.large_pool.current",
                                               "allocated_bytes.large_pool.peak",
                                               "allocated_bytes.large_pool.allocated",
                                               "allocated_bytes.large_pool.freed",
                                               "requested_bytes.large_pool.current",
                                               "requested_bytes.large_pool.peak",
                                               "requested_bytes.large_pool.allocated",
                                               "requested_bytes.large_pool.freed",
                                               "active.large_pool.current",
                                               "active.large_pool.peak",
                                               "allocation.large_pool.allocated",
                                               "allocation.large_pool.freed"};
  CHECK(c.size() == documented.size());
  REQUIRE(std::size(kAllocatorStatFields) == documented.size());
  for (std::size_t i = 0; i < documented.size(); ++i) {
    CHECK(kAllocatorStatFields[i].snapshot_key == documented[i]);
    CHECK(c.contains(documented[i]));
  }
  CHECK(c["allocation.all.allocated"] == 2);
  CHECK(c["active.all.current"] == 2);
  CHECK(c["allocated_bytes.all.current"] == a.block_size(big) + a.block_size(small));
  CHECK(c["requested_bytes.all.current"] == 3 * MiB + 1000);
  CHECK(c["allocated_bytes.small_pool.current"] == a.block_size(small));
  CHECK(c["allocated_bytes.large_pool.allocated"] == a.block_size(big));

  const Json& t = d["totals"];
  CHECK(t["in_use_bytes"] == 2 * MiB + a.block_size(big) + a.block_size(small));
  CHECK(t["workspaces"] == 1);
  CHECK(t["physical_bytes"].get<std::uint64_t>() ==
        t["mapped_bytes"].get<std::uint64_t>() + d["pool"]["cached_bytes"].get<std::uint64_t>() +
            t["pending_bytes"].get<std::uint64_t>());
  CHECK(d["address_space"]["reservations"].size() == d["address_space"]["reservation_count"]);

  // Events: the grow maps 24 MiB in 2 chunks; the shrink goes 24 -> 2 MiB.
  bool grow = false, shrink = false, map = false;
  for (const Event& e : events_since(since)) {
    if (e.kind == EventKind::grow && e.addr == base) {
      grow = e.bytes == 24 * MiB && e.detail == 0;
    } else if (e.kind == EventKind::shrink && e.addr == base) {
      shrink = e.bytes == 2 * MiB && e.detail == 24 * MiB;
    } else if (e.kind == EventKind::map && e.addr == base) {
      map = e.bytes == 24 * MiB && e.detail == 2;
    }
  }
  CHECK(grow);
  CHECK(shrink);
  CHECK(map);

  // A summary leaves the lists out.
  const Json sum = Json::parse(snapshot_json("live", SnapshotDetail::summary));
  CHECK(sum["detail"] == "summary");
  CHECK(sum["reason"] == "live");
  for (const Json& sd : sum["devices"]) {
    CHECK_FALSE(sd.contains("regions"));
    CHECK_FALSE(sd["reclaimer"].contains("pending"));
  }
  CHECK_FALSE(sum["events"].contains("items"));

  // Once the stream is done the tail is unmapped: an unmap event, and the
  // ring's mapped total moved exactly as the backend's own count did.
  h.device().synchronize(S);
  REQUIRE(h.wait_reclaimed());
  bool unmap = false;
  for (const Event& e : events_since(since)) {
    if (e.kind == EventKind::unmap && e.addr == base + 16 * MiB) unmap = e.bytes == 8 * MiB;
  }
  CHECK(unmap);
  const std::int64_t backend_delta =
      static_cast<std::int64_t>(h.inner().live_objects().mapped_bytes) -
      static_cast<std::int64_t>(mapped_before);
  CHECK(events::mapped_bytes(device) - ring_mapped_before == backend_delta);

  a.deallocate(big);
  a.deallocate(small);
}

TEST_CASE("snapshot: taken while threads allocate, free, grow and shrink", "[snapshot]") {
  Harness h(make_host_test_device());
  const int device = h.context().device();
  const std::size_t mapped_before = h.inner().live_objects().mapped_bytes;
  const std::int64_t ring_mapped_before = events::mapped_bytes(device);
  Allocator a(h.context());
  const bool was = allocation_events();
  set_allocation_events(true);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> allocations{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; ++t) {
    workers.emplace_back([&, t] {
      std::vector<void*> live;
      std::size_t n = 0;
      while (!stop.load()) {
        live.push_back(
            a.allocate(512 + (n++ * 7919 + static_cast<std::size_t>(t)) % (3 * MiB), nullptr));
        ++allocations;
        if (live.size() > 16) {
          a.deallocate(live.front());
          live.erase(live.begin());
        }
      }
      for (void* p : live) a.deallocate(p);
    });
  }
  workers.emplace_back([&] {
    Workspace ws(h.context(), 256 * MiB);
    std::size_t n = 0;
    while (!stop.load()) {
      ws.grow_to((++n % 50 + 1) * 2 * MiB);
      ws.shrink_to((n % 7) * MiB, nullptr);
    }
  });
  int snapshots = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  // At least half a second and three snapshots (sanitizer builds are slow).
  while (std::chrono::steady_clock::now() < end || snapshots < 3) {
    const Json snap = full_snapshot();
    REQUIRE(snap["devices"].is_array());
    ++snapshots;
  }
  stop = true;
  for (std::thread& w : workers) w.join();
  set_allocation_events(was);
  // Quiet now: this heap's counters and the accounting identity hold exactly.
  REQUIRE(h.wait_reclaimed());
  const Json snap = full_snapshot();
  int found = 0;
  for (const Json& d : snap["devices"]) {
    if (!d["counters"].is_object() ||
        d["counters"]["allocation.all.allocated"] != allocations.load()) {
      continue;
    }
    ++found;
    CHECK(d["counters"]["allocation.all.freed"] == allocations.load());
    CHECK(d["totals"]["in_use_bytes"] == 0);
    CHECK(d["totals"]["physical_bytes"].get<std::uint64_t>() ==
          d["totals"]["mapped_bytes"].get<std::uint64_t>() +
              d["pool"]["cached_bytes"].get<std::uint64_t>() +
              d["totals"]["pending_bytes"].get<std::uint64_t>());
  }
  CHECK(found == 1);
  // Every map and unmap of the heap and the workspace was recorded: the
  // ring's mapped total moved as the backend's own count did.
  a.empty_cache();
  REQUIRE(h.wait_reclaimed());
  CHECK(events::mapped_bytes(device) - ring_mapped_before ==
        static_cast<std::int64_t>(h.inner().live_objects().mapped_bytes) -
            static_cast<std::int64_t>(mapped_before));
}

TEST_CASE("snapshot: a released workspace and a destroyed allocator leave it", "[snapshot]") {
  Harness h(make_host_test_device());
  std::uintptr_t base = 0;
  {
    Workspace ws(h.context(), 8 * MiB);
    base = reinterpret_cast<std::uintptr_t>(ws.data());
    CHECK(device_with_region(full_snapshot(), base) != nullptr);
    ws.release(nullptr);
    CHECK(device_with_region(full_snapshot(), base) == nullptr);
    CHECK_THROWS_AS(ws.set_name("x"), InvalidArgumentError);
  }
  std::uintptr_t block = 0;
  {
    Allocator a(h.context());
    void* p = a.allocate(4 * MiB, nullptr);
    block = reinterpret_cast<std::uintptr_t>(p);
    CHECK(has_block(full_snapshot(), block));
    a.deallocate(p);
  }
  CHECK_FALSE(has_block(full_snapshot(), block));
}

TEST_CASE("snapshot: allocation events only while on", "[snapshot][events]") {
  Harness h(make_host_test_device());
  Allocator a(h.context());
  const bool was = allocation_events();
  auto count = [](std::uint64_t since, EventKind kind, std::uintptr_t addr) {
    int n = 0;
    for (const Event& e : events_since(since)) n += e.kind == kind && e.addr == addr ? 1 : 0;
    return n;
  };

  set_allocation_events(false);
  std::uint64_t since = recorded_now();
  void* p = a.allocate(5000, h.stream());
  a.deallocate(p);
  CHECK(count(since, EventKind::allocate, reinterpret_cast<std::uintptr_t>(p)) == 0);
  CHECK(count(since, EventKind::free, reinterpret_cast<std::uintptr_t>(p)) == 0);

  set_allocation_events(true);
  CHECK(allocation_events());
  since = recorded_now();
  p = a.allocate(5000, h.stream());
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  a.deallocate(p, h.stream());
  set_allocation_events(was);
  bool alloc = false, freed = false;
  for (const Event& e : events_since(since)) {
    if (e.kind == EventKind::allocate && e.addr == addr) {
      alloc = e.bytes == round_request(5000) && e.detail == 5000 &&
              e.stream == reinterpret_cast<std::uintptr_t>(h.stream());
    }
    if (e.kind == EventKind::free && e.addr == addr) freed = e.bytes == round_request(5000);
  }
  CHECK(alloc);
  CHECK(freed);
  // The snapshot says whether they are on.
  set_allocation_events(true);
  CHECK(full_snapshot()["events"]["allocation_events"] == true);
  set_allocation_events(false);
  CHECK(full_snapshot()["events"]["allocation_events"] == false);
  set_allocation_events(was);
}

TEST_CASE("snapshot: out of memory records an event and writes snapshot_on_oom",
          "[snapshot][oom]") {
  TempDir dir("vmm-snapshot-test");
  Config c = test_config();
  c.memory_cap_bytes = 64 * MiB;
  c.snapshot_on_oom = dir.path + "/oom-%p.json";
  Harness h(make_host_test_device(), c);
  const std::string written = dir.path + "/oom-" + std::to_string(::getpid()) + ".json";
  const std::uint64_t since = recorded_now();

  Allocator a(h.context());
  CHECK_THROWS_AS(a.allocate(128 * MiB, h.stream()), OutOfMemoryError);
  bool oom = false;
  for (const Event& e : events_since(since)) {
    if (e.kind == EventKind::oom && e.bytes == 128 * MiB) oom = e.detail == 0;
  }
  CHECK(oom);
  const Json snap = Json::parse(read_file(written));
  CHECK(snap["reason"] == "oom");
  bool counted = false;
  for (const Json& d : snap["devices"]) {
    if (d["counters"].is_object() && d["pool"]["memory_cap"] == 64 * MiB) {
      counted = d["counters"]["num_ooms"] == 1;
    }
  }
  CHECK(counted);
  // Written through a temporary file, renamed into place: nothing else left.
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.path.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') names.emplace_back(e->d_name);
    }
    ::closedir(d);
  }
  CHECK(names == std::vector<std::string>{"oom-" + std::to_string(::getpid()) + ".json"});

  ::unlink(written.c_str());
  Workspace ws(h.context(), 256 * MiB);
  CHECK_THROWS_AS(ws.grow_to(128 * MiB), OutOfMemoryError);
  bool ws_oom = false;
  for (const Event& e : events_since(since)) {
    if (e.kind == EventKind::oom && e.bytes == 128 * MiB && e.detail == 1) ws_oom = true;
  }
  CHECK(ws_oom);
  CHECK(Json::parse(read_file(written))["reason"] == "oom");
}

TEST_CASE("snapshot: paths, and writing errors name the path", "[snapshot]") {
  const std::string pid = std::to_string(::getpid());
  CHECK(expand_snapshot_path("/tmp/a-%p.json") == "/tmp/a-" + pid + ".json");
  CHECK(expand_snapshot_path("100%%-%p") == "100%-" + pid);
  CHECK(expand_snapshot_path("plain") == "plain");
  const auto bad = expect_throw<InvalidArgumentError>([] { expand_snapshot_path("/tmp/%q"); });
  CHECK(contains(bad.what(), "%p"));
  CHECK_THROWS_AS(expand_snapshot_path(""), InvalidArgumentError);
  CHECK_THROWS_AS(expand_snapshot_path("/tmp/x%"), InvalidArgumentError);

  const auto e =
      expect_throw<InvalidArgumentError>([] { write_snapshot("/nonexistent-dir-for-vmm/x.json"); });
  CHECK(contains(e.what(), "/nonexistent-dir-for-vmm/x.json"));
  CHECK(contains(e.what(), "No such file"));

  TempDir dir("vmm-snapshot-test");
  const std::string path = write_snapshot(dir.path + "/s-%p.json");
  CHECK(path == dir.path + "/s-" + pid + ".json");
  const Json snap = Json::parse(read_file(path));
  CHECK(snap["reason"] == "api");
  CHECK(snap["schema"] == kSnapshotSchema);
}

// ------------------------------------------------------------ configuration

TEST_CASE("config: the observability options", "[snapshot][config]") {
  const Config d;
  CHECK(d.live_socket);
  CHECK(d.live_socket_dir == "/tmp");
  CHECK(d.snapshot_at_exit.empty());
  CHECK(d.snapshot_on_oom.empty());
  CHECK_FALSE(d.allocation_events);
  CHECK(d.event_ring_size == 4096);

  const Config c = Config::parse(
      "live_socket:off,live_socket_dir:/run/user/1000,snapshot_at_exit:/tmp/exit-%p.json,"
      "snapshot_on_oom: /tmp/oom.json ,allocation_events:ON,event_ring_size:64K");
  CHECK_FALSE(c.live_socket);
  CHECK(c.live_socket_dir == "/run/user/1000");
  CHECK(c.snapshot_at_exit == "/tmp/exit-%p.json");
  CHECK(c.snapshot_on_oom == "/tmp/oom.json");
  CHECK(c.allocation_events);
  CHECK(c.event_ring_size == 65536);
  CHECK(Config::parse(c.to_string()) == c);
  for (const char* on : {"on", "true", "1", "True"})
    CHECK(Config::parse(std::string("live_socket:") + on).live_socket);
  for (const char* off : {"off", "false", "0"})
    CHECK_FALSE(Config::parse(std::string("live_socket:") + off).live_socket);

  struct Bad {
    const char* conf;
    const char* key;
    const char* says;
  };
  for (const Bad& b :
       {Bad{"live_socket:maybe", "live_socket", "on or off"},
        Bad{"allocation_events:2", "allocation_events", "on or off"},
        Bad{"live_socket_dir:relative/dir", "live_socket_dir", "not an absolute path"},
        Bad{"live_socket_dir:", "live_socket_dir", "absolute"},
        Bad{"live_socket_dir:/tmp/%p", "live_socket_dir", "'%'"},
        Bad{"snapshot_at_exit:/tmp/%q.json", "snapshot_at_exit", "%p"},
        Bad{"snapshot_on_oom:/tmp/x%", "snapshot_on_oom", "%p"},
        Bad{"event_ring_size:8", "event_ring_size", "16 to 16777216"},
        Bad{"event_ring_size:32M", "event_ring_size", "16 to 16777216"}}) {
    INFO(b.conf);
    const auto e = expect_throw<ConfigError>([&] { Config::parse(b.conf); });
    CHECK(e.key() == b.key);
    CHECK(contains(e.what(), b.says));
  }
  Config code;
  code.snapshot_at_exit = "/tmp/a,b.json";
  CHECK_THROWS_AS(code.validate(), ConfigError);
  code.snapshot_at_exit = " /tmp/a.json";
  CHECK_THROWS_AS(code.validate(), ConfigError);
}

// ------------------------------------------------------------------- C ABI

TEST_CASE("C ABI: snapshots, workspace names and allocation events", "[snapshot][c_api]") {
  // The same process configuration as the other C ABI tests (whichever runs
  // first sets it; later calls fail once a device is in use, which is fine).
  static const vmm_status configured = vmm_configure("backend:host,va_reservation_size:8G");
  (void)configured;
  const char* backend = nullptr;
  REQUIRE(vmm_backend_name(0, &backend) == VMM_SUCCESS);
  REQUIRE(std::string(backend) == "host");

  vmm_workspace* ws = nullptr;
  REQUIRE(vmm_workspace_create(32u << 20, 0, &ws) == VMM_SUCCESS);
  REQUIRE(vmm_workspace_set_name(ws, "c-abi") == VMM_SUCCESS);
  REQUIRE(vmm_workspace_grow(ws, 4u << 20) == VMM_SUCCESS);
  CHECK(vmm_workspace_set_name(ws, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_set_name(nullptr, "x") == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_set_allocation_events(0) == VMM_SUCCESS);
  CHECK_FALSE(allocation_events());

  char* json = nullptr;
  std::size_t length = 0;
  REQUIRE(vmm_snapshot_json(&json, &length) == VMM_SUCCESS);
  REQUIRE(json != nullptr);
  CHECK(std::strlen(json) == length);
  const Json snap = Json::parse(json);
  vmm_snapshot_free(json);
  vmm_snapshot_free(nullptr);
  void* base = nullptr;
  vmm_workspace_data(ws, &base);
  const Json* d = device_with_region(snap, reinterpret_cast<std::uintptr_t>(base));
  REQUIRE(d != nullptr);
  CHECK((*region_at(*d, reinterpret_cast<std::uintptr_t>(base)))["name"] == "c-abi");
  CHECK((*region_at(*d, reinterpret_cast<std::uintptr_t>(base)))["size"] == 4u << 20);
  CHECK(vmm_snapshot_json(nullptr, &length) == VMM_ERROR_INVALID_VALUE);

  TempDir dir("vmm-snapshot-test");
  const std::string path = dir.path + "/c-%p.json";
  REQUIRE(vmm_snapshot_write(path.c_str()) == VMM_SUCCESS);
  CHECK(Json::parse(read_file(dir.path + "/c-" + std::to_string(::getpid()) + ".json"))["schema"] ==
        kSnapshotSchema);
  CHECK(vmm_snapshot_write("/nonexistent-dir-for-vmm/x.json") == VMM_ERROR_INVALID_VALUE);
  CHECK(contains(vmm_last_error(), "/nonexistent-dir-for-vmm/x.json"));
  CHECK(vmm_snapshot_write(nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_destroy(ws, nullptr) == VMM_SUCCESS);
}
