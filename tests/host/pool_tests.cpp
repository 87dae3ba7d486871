// PhysicalPool over HostBackend: chunk planning, caching, the cache limit,
// the memory cap, device out-of-memory and all-or-nothing acquisition.
#include <vector>

#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/backend/host_backend.hpp"
#include "allocator/vm/physical_pool.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "vmmalloc/errors.hpp"

using namespace vmm;

namespace {

void check_balanced(const PhysicalPool& pool) {
  const PoolStats s = pool.stats();
  CHECK(s.created_bytes == s.acquired_bytes + s.cached_bytes);
}

std::size_t total(const std::vector<Chunk>& chunks) {
  std::size_t n = 0;
  for (const Chunk& c : chunks) n += c.bytes;
  return n;
}

}  // namespace

TEST_CASE("plan covers a size with the fewest chunks", "[pool]") {
  HostBackend backend;
  PhysicalPool pool(backend, Config{});
  CHECK(pool.plan(0).empty());
  CHECK(pool.plan(1) == std::vector<std::size_t>{2 * MiB});
  CHECK(pool.plan(300 * MiB) == std::vector<std::size_t>{256 * MiB, 32 * MiB, 8 * MiB, 4 * MiB});
  CHECK(pool.plan(3 * GiB) == std::vector<std::size_t>{GiB, GiB, GiB});
  Config only_big;
  only_big.chunk_sizes = {32 * MiB};
  PhysicalPool coarse(backend, only_big);  // the granularity class is always added
  CHECK(coarse.plan(34 * MiB) == std::vector<std::size_t>{32 * MiB, 2 * MiB});
}

TEST_CASE("acquire returns the chunks in the order asked, cached or new", "[pool]") {
  HostBackend backend;
  PhysicalPool pool(backend, Config{});
  pool.give_back(pool.acquire({2 * MiB, 8 * MiB}));  // cache one 2 MiB and one 8 MiB
  const std::vector<std::size_t> sizes{4 * MiB, 8 * MiB, 16 * MiB, 2 * MiB, 4 * MiB};
  const std::vector<Chunk> got = pool.acquire(sizes);
  REQUIRE(got.size() == sizes.size());
  for (std::size_t i = 0; i < sizes.size(); ++i) CHECK(got[i].bytes == sizes[i]);
  CHECK(pool.stats().cache_hits == 2);
  check_balanced(pool);
  pool.give_back(got);
}

TEST_CASE("chunks given back are cached and reused", "[pool]") {
  HostBackend backend;
  PhysicalPool pool(backend, Config{});
  auto a = pool.acquire({4 * MiB, 2 * MiB});
  CHECK(pool.stats().creates == 2);
  pool.give_back(a);
  CHECK(pool.stats().cached_bytes == 6 * MiB);
  auto b = pool.acquire({4 * MiB});
  CHECK(pool.stats().creates == 2);
  CHECK(pool.stats().cache_hits == 1);
  CHECK(b[0].handle == a[0].handle);
  check_balanced(pool);
  pool.give_back(b);
  CHECK(pool.trim(0) == 6 * MiB);
  CHECK(backend.live_handles() == 0);
}

TEST_CASE("the cache is trimmed to its limit", "[pool]") {
  HostBackend backend;
  Config cfg;
  cfg.pool_cache_limit = 8 * MiB;
  PhysicalPool pool(backend, cfg);
  auto chunks = pool.acquire({8 * MiB, 4 * MiB, 4 * MiB});
  pool.give_back(chunks);
  CHECK(pool.stats().cached_bytes <= 8 * MiB);
  CHECK(pool.stats().releases >= 1);
  CHECK(backend.created_bytes() == pool.stats().created_bytes);
  check_balanced(pool);
}

TEST_CASE("the memory cap is a clean out-of-memory error", "[pool]") {
  HostBackend backend;
  Config cfg;
  cfg.memory_cap_bytes = 10 * MiB;
  cfg.pool_cache_limit = GiB;
  PhysicalPool pool(backend, cfg);
  auto a = pool.acquire({8 * MiB});
  const PoolStats before = pool.stats();
  CHECK_THROWS_AS(pool.acquire({4 * MiB}), OutOfMemoryError);
  const PoolStats after = pool.stats();
  CHECK(after.created_bytes == before.created_bytes);
  CHECK(after.acquired_bytes == before.acquired_bytes);
  // Cached chunks are released to make room under the cap.
  pool.give_back(a);
  auto b = pool.acquire({4 * MiB, 2 * MiB});
  CHECK(total(b) == 6 * MiB);
  CHECK(pool.stats().created_bytes <= 10 * MiB);
  check_balanced(pool);
  pool.give_back(b);
}

TEST_CASE("a cap given as a fraction of device memory", "[pool]") {
  HostBackend::Options opt;
  opt.device_memory = 100 * MiB;
  HostBackend backend(opt);
  Config cfg;
  cfg.memory_cap_fraction = 0.5;
  PhysicalPool pool(backend, cfg);
  CHECK(pool.stats().memory_cap_bytes == 50 * MiB);
}

TEST_CASE("device out of memory releases the cache and retries", "[pool]") {
  HostBackend::Options opt;
  opt.device_memory = 16 * MiB;
  HostBackend backend(opt);
  Config cfg;
  cfg.pool_cache_limit = GiB;
  PhysicalPool pool(backend, cfg);
  pool.give_back(pool.acquire({8 * MiB}));
  CHECK(pool.stats().cached_bytes == 8 * MiB);
  auto big = pool.acquire({16 * MiB});  // only fits once the cache is released
  CHECK(pool.stats().cached_bytes == 0);
  CHECK(pool.stats().created_bytes == 16 * MiB);
  pool.give_back(big);
  check_balanced(pool);
}

TEST_CASE("acquire is all or nothing", "[pool]") {
  HostBackend::Options opt;
  opt.device_memory = 16 * MiB;
  HostBackend backend(opt);
  PhysicalPool pool(backend, Config{});
  try {
    pool.acquire({8 * MiB, 8 * MiB, 8 * MiB});
    FAIL("acquired more than the device has");
  } catch (const OutOfMemoryError& e) {
    CHECK(std::string(e.what()).find("device 0 out of memory") != std::string::npos);
  }
  CHECK(pool.stats().created_bytes == 0);
  CHECK(pool.stats().acquired_bytes == 0);
  CHECK(backend.live_handles() == 0);
  CHECK_THROWS_AS(pool.acquire({3 * MiB}), InvalidArgumentError);
}

TEST_CASE("a failed create or release keeps the accounting exact", "[pool][faults]") {
  HostBackend backend;
  FaultInjectingBackend faults(backend);
  PhysicalPool pool(faults, Config{});
  faults.fail_nth(BackendCall::create, 2);
  CHECK_THROWS_AS(pool.acquire({2 * MiB, 4 * MiB, 8 * MiB}), DriverError);
  CHECK(pool.stats().created_bytes == 0);
  CHECK(backend.live_handles() == 0);

  auto a = pool.acquire({2 * MiB, 4 * MiB});
  pool.give_back(a);
  faults.fail_nth(BackendCall::release, 1);
  pool.trim(0);  // one release fails: that chunk stays cached
  check_balanced(pool);
  CHECK(pool.stats().cached_bytes == backend.created_bytes());
  pool.trim(0);
  CHECK(backend.live_handles() == 0);
  CHECK(pool.stats().created_bytes == 0);
}
