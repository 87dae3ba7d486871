// Reclaimer over HostBackend, without its background thread so every step
// is deterministic: entries wait for their fences, cancel takes them back,
// drain waits, failed unmaps are retried.
#include <atomic>
#include <chrono>
#include <thread>

#include "allocator/vm/address_space.hpp"
#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/backend/host_backend.hpp"
#include "allocator/vm/physical_pool.hpp"
#include "allocator/vm/reclaimer.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"

using namespace vmm;

namespace {

struct Layers {
  HostBackend host;
  FaultInjectingBackend backend{host};
  Config config = [] {
    Config c;
    c.va_reservation_size = 64 * MiB;
    c.pool_cache_limit = GiB;
    return c;
  }();
  PhysicalPool pool{backend, config};
  AddressSpace space{backend, config};
  Reclaimer reclaimer{backend, pool, space, /*background_thread=*/false};
  Stream stream = host.create_stream();
  std::atomic<bool> release_gate{false};

  ~Layers() {
    release_gate = true;
    host.synchronize(stream);
    host.destroy_stream(stream);
  }

  // Maps one chunk of `bytes` in a fresh range.
  std::pair<VaRange, Mapping> map_one(std::size_t bytes) {
    VaRange r = space.allocate(bytes);
    Chunk c = pool.acquire({bytes})[0];
    backend.map(r.base, bytes, c.handle);
    backend.set_access(r.base, bytes);
    return {r, Mapping{r.base, c}};
  }
  // Blocks the stream until release_gate is set.
  void block_stream() {
    host.enqueue(stream, [this] {
      while (!release_gate) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
  }
};

}  // namespace

TEST_CASE("an entry is reclaimed only after its fence", "[reclaimer]") {
  Layers l;
  auto [range, m] = l.map_one(4 * MiB);
  l.block_stream();
  l.reclaimer.submit({Fence::record(l.backend, l.stream)}, {m}, range);
  CHECK(l.reclaimer.poll() == 0);
  CHECK(l.reclaimer.stats().pending_bytes == 4 * MiB);
  CHECK(l.host.mapped_bytes() == 4 * MiB);
  l.release_gate = true;
  l.host.synchronize(l.stream);
  CHECK(l.reclaimer.poll() == 1);
  CHECK(l.reclaimer.stats().pending_bytes == 0);
  CHECK(l.host.mapped_bytes() == 0);
  CHECK(l.pool.stats().cached_bytes == 4 * MiB);
  CHECK(l.space.stats().allocated_bytes == 0);
}

TEST_CASE("cancel takes a pending entry back, still mapped", "[reclaimer]") {
  Layers l;
  auto [range, m] = l.map_one(2 * MiB);
  l.block_stream();
  auto t = l.reclaimer.submit({Fence::record(l.backend, l.stream)}, {m});
  auto back = l.reclaimer.cancel(t);
  REQUIRE(back.has_value());
  CHECK(back->mappings.size() == 1);
  CHECK(back->fences.size() == 1);
  CHECK(l.host.mapped_bytes() == 2 * MiB);
  CHECK(l.reclaimer.stats().pending_entries == 0);
  CHECK_FALSE(l.reclaimer.cancel(t).has_value());
  // Hand it over again and let it complete: cancel then finds nothing.
  auto t2 = l.reclaimer.submit(std::move(back->fences), std::move(back->mappings), range);
  l.release_gate = true;
  l.host.synchronize(l.stream);
  CHECK(l.reclaimer.poll() == 1);
  CHECK_FALSE(l.reclaimer.cancel(t2).has_value());
}

TEST_CASE("drain waits on the pending fences only", "[reclaimer]") {
  Layers l;
  auto [range, m] = l.map_one(2 * MiB);
  l.host.enqueue(l.stream, [] { std::this_thread::sleep_for(std::chrono::milliseconds(50)); });
  l.reclaimer.submit({Fence::record(l.backend, l.stream)}, {m}, range);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(l.reclaimer.drain() == 1);
  CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(20));
  CHECK(l.reclaimer.stats().pending_entries == 0);
}

TEST_CASE("a failed unmap is retried, not leaked", "[reclaimer][faults]") {
  Layers l;
  auto [range, m] = l.map_one(2 * MiB);
  l.reclaimer.submit({Fence::record(l.backend, l.stream)}, {m}, range);
  l.host.synchronize(l.stream);
  l.backend.fail_nth(BackendCall::unmap, 1);
  CHECK(l.reclaimer.poll() == 0);
  CHECK(l.reclaimer.stats().failures == 1);
  CHECK(l.reclaimer.stats().pending_bytes == 2 * MiB);
  CHECK(l.reclaimer.poll() == 1);
  CHECK(l.host.mapped_bytes() == 0);
  CHECK(l.space.stats().allocated_bytes == 0);
}
