// Options of a graph pool that torch.cuda.MemPool sets (Allocator::
// set_pool_use_on_oom, set_pool_no_split), on every backend: a use-on-OOM
// pool lends its free blocks to allocations outside it once no new memory
// may be mapped (and gets them back when they are freed); a no-split pool
// hands out its free blocks whole; unknown and released pools are refused.
#include <cstdint>
#include <vector>

#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"

using namespace vmm;
using namespace vmm::test;

namespace {

void* allocate_in(Allocator& a, PoolId pool, Stream s, std::size_t n) {
  a.begin_pool(pool, s);
  void* p = a.allocate(n, s);
  a.end_pool(pool);
  return p;
}

bool inside(const void* p, const void* base, std::size_t size) {
  const auto x = reinterpret_cast<std::uintptr_t>(p);
  const auto b = reinterpret_cast<std::uintptr_t>(base);
  return x >= b && x < b + size;
}

}  // namespace

TEMPLATE_TEST_CASE("pool options: a use-on-OOM pool serves others when no memory may be mapped",
                   "[conformance][pool_options]", VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    const Stream s = h.stream();
    const PoolId pool = a.create_pool();
    void* block = allocate_in(a, pool, s, 16 * MiB);
    a.deallocate(block, s);      // free, kept by the pool
    a.set_memory_fraction(0.0);  // no new device memory at all

    // Not lent: the request outside the pool fails, nothing changes.
    CHECK_THROWS_AS(a.allocate(4 * MiB, s), OutOfMemoryError);
    a.set_pool_use_on_oom(pool, true);
    void* lent = a.allocate(4 * MiB, s);
    CHECK(inside(lent, block, 16 * MiB));
    h.device().fill(s, lent, 4 * MiB, 0x5a);
    h.device().verify(s, lent, 4 * MiB, 0x5a);
    CHECK(h.device().mismatches(s) == 0);
    CHECK(a.pool_live_blocks(pool) == std::vector<void*>{lent});  // the pool's block
    a.deallocate(lent, s);  // back to the pool
    CHECK(a.pool_live_blocks(pool).empty());

    // Lending off again: refused again, the pool's memory stays its own.
    a.set_pool_use_on_oom(pool, false);
    CHECK_THROWS_AS(a.allocate(4 * MiB, s), OutOfMemoryError);
    void* own = allocate_in(a, pool, s, 16 * MiB);
    CHECK(own == block);
    a.deallocate(own, s);
    a.set_memory_fraction(1.0);
    a.release_pool(pool);
    CHECK_THROWS_AS(a.set_pool_use_on_oom(pool, true), InvalidArgumentError);
    CHECK_THROWS_AS(a.set_pool_use_on_oom(987654, true), InvalidArgumentError);
    CHECK_NOTHROW(a.set_pool_use_on_oom(pool, false));  // MemPool's destructor: harmless
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("pool options: a no-split pool hands out its free blocks whole",
                   "[conformance][pool_options]", VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    const Stream s = h.stream();
    const PoolId pool = a.create_pool();
    a.set_pool_no_split(pool);
    void* big = allocate_in(a, pool, s, 8 * MiB);
    a.deallocate(big, s);
    const std::size_t before = a.stats().allocated_bytes;
    void* small = allocate_in(a, pool, s, 2 * MiB);
    CHECK(small == big);
    CHECK(a.stats().allocated_bytes - before == 8 * MiB);  // the whole block
    h.device().fill(s, small, 8 * MiB, 0x11);               // all of it is the caller's
    h.device().verify(s, small, 8 * MiB, 0x11);
    CHECK(h.device().mismatches(s) == 0);
    void* other = allocate_in(a, pool, s, 2 * MiB);  // nothing left to split: new memory
    CHECK(!inside(other, big, 8 * MiB));
    a.deallocate(small, s);
    a.deallocate(other, s);
    // A pool that splits (the default) carves the same request out.
    const PoolId plain = a.create_pool();
    void* b2 = allocate_in(a, plain, s, 8 * MiB);
    a.deallocate(b2, s);
    const std::size_t before2 = a.stats().allocated_bytes;
    void* s2 = allocate_in(a, plain, s, 2 * MiB);
    CHECK(a.stats().allocated_bytes - before2 == 2 * MiB);
    a.deallocate(s2, s);
    a.release_pool(pool);
    a.release_pool(plain);
    CHECK_THROWS_AS(a.set_pool_no_split(pool), InvalidArgumentError);
    CHECK_THROWS_AS(a.set_pool_no_split(424242), InvalidArgumentError);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}
