// Checkpoints of graph pools (vmmalloc/pool_checkpoint.hpp), on every
// backend, as PyTorch's CUDA-graph trees use them: record a graph's blocks,
// checkpoint, let the pool move on (frees, other sizes), restore - the
// checkpoint's blocks are live again at their addresses and sizes, what was
// live is reported freed, the accounting is exact and nothing leaks; bad
// pools, captures in progress and changed layouts are refused.
#include <algorithm>
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

std::vector<void*> allocate_in(Allocator& a, PoolId pool, Stream s, std::vector<std::size_t> sizes) {
  a.begin_pool(pool, s);
  std::vector<void*> out;
  for (std::size_t n : sizes) out.push_back(a.allocate(n, s));
  a.end_pool(pool);
  return out;
}

std::vector<void*> sorted(std::vector<void*> v) {
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

TEMPLATE_TEST_CASE("pool checkpoint: restore brings back the checkpoint's blocks in place",
                   "[conformance][checkpoint]", VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    const Stream s = h.stream();
    const PoolId pool = a.create_pool();
    // A graph's recording: inputs, intermediates, outputs.
    std::vector<void*> rec = allocate_in(a, pool, s, {3 * MiB, 700, 12 * MiB + 5, 64 * KiB});
    a.deallocate(rec[1], s);  // an intermediate freed during the recording
    const std::vector<void*> live_at_cp = sorted({rec[0], rec[2], rec[3]});
    h.device().fill(s, rec[0], 3 * MiB, 0x31);
    const PoolCheckpoint cp = a.checkpoint_pool(pool);
    REQUIRE(cp.live.size() == 3);
    CHECK(cp.pool == pool);
    CHECK(sorted(a.pool_live_blocks(pool)) == live_at_cp);
    const AllocatorStats at_cp = a.stats();

    // The pool moves on: outputs die, another graph records other sizes.
    a.deallocate(rec[0], s);
    a.deallocate(rec[2], s);
    std::vector<void*> other = allocate_in(a, pool, s, {5 * MiB, 9 * MiB, 100});
    const std::vector<void*> live_now = sorted({rec[3], other[0], other[1], other[2]});
    CHECK(sorted(a.pool_live_blocks(pool)) == live_now);

    const CheckpointDelta d = a.restore_pool(cp);
    CHECK(sorted(d.freed) == live_now);
    CHECK(sorted(d.allocated) == live_at_cp);
    CHECK(sorted(a.pool_live_blocks(pool)) == live_at_cp);
    for (const PoolCheckpoint::LiveBlock& lb : cp.live) {
      CHECK(a.block_size(reinterpret_cast<void*>(lb.addr)) == lb.size);
    }
    const AllocatorStats after = a.stats();
    CHECK(after.allocated_bytes == at_cp.allocated_bytes);
    CHECK(after.active_blocks == at_cp.active_blocks);
    check_heap_accounting(h, a);
    // The restored blocks are ordinary blocks: written, freed, reused.
    h.device().fill(s, rec[2], 12 * MiB + 5, 0x32);
    h.device().verify(s, rec[2], 12 * MiB + 5, 0x32);
    CHECK(h.device().mismatches(s) == 0);
    // Restoring the same checkpoint again is a no-op in effect.
    const CheckpointDelta again = a.restore_pool(cp);
    CHECK(sorted(again.freed) == live_at_cp);
    CHECK(sorted(again.allocated) == live_at_cp);
    for (void* p : live_at_cp) a.deallocate(p, s);
    CHECK(a.pool_live_blocks(pool).empty());
    a.release_pool(pool);
    check_heap_accounting(h, a);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("pool checkpoint: refusals leave the pool as it was",
                   "[conformance][checkpoint]", VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    const Stream s = h.stream();
    CHECK_THROWS_AS(a.checkpoint_pool(0), InvalidArgumentError);
    CHECK_THROWS_AS(a.checkpoint_pool(987654), InvalidArgumentError);
    const PoolId pool = a.create_pool();
    std::vector<void*> rec = allocate_in(a, pool, s, {2 * MiB, 4 * MiB});
    const PoolCheckpoint cp = a.checkpoint_pool(pool);
    // Being captured into: refused, nothing freed.
    a.begin_pool(pool, s);
    CHECK_THROWS_AS(a.checkpoint_pool(pool), InvalidArgumentError);
    CHECK_THROWS_AS(a.restore_pool(cp), InvalidArgumentError);
    a.end_pool(pool);
    CHECK(sorted(a.pool_live_blocks(pool)) == sorted(rec));
    // A malformed checkpoint (not ascending, a zero size): refused before
    // anything changes.
    PoolCheckpoint unsorted = cp;
    std::swap(unsorted.live[0], unsorted.live[1]);
    CHECK_THROWS_AS(a.restore_pool(unsorted), InvalidArgumentError);
    PoolCheckpoint empty_block = cp;
    empty_block.live[0].size = 0;
    CHECK_THROWS_AS(a.restore_pool(empty_block), InvalidArgumentError);
    CHECK(sorted(a.pool_live_blocks(pool)) == sorted(rec));
    // A checkpoint naming memory the pool does not have: refused.
    PoolCheckpoint forged = cp;
    forged.live.push_back({cp.live.back().addr + (std::uintptr_t{1} << 40), 4096, 4096, s});
    CHECK_THROWS_AS(a.restore_pool(forged), InvalidArgumentError);
    CHECK(a.pool_live_blocks(pool).empty());  // as promised: the pool's blocks are all free
    check_heap_accounting(h, a);
    // The pool still works, and the real checkpoint restores.
    CHECK(sorted(a.restore_pool(cp).allocated) == sorted(rec));
    for (void* p : a.pool_live_blocks(pool)) a.deallocate(p, s);
    a.release_pool(pool);
    CHECK_THROWS_AS(a.restore_pool(cp), InvalidArgumentError);  // released
    check_heap_accounting(h, a);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("pool checkpoint: a block other streams still use is handed out after their work",
                   "[conformance][checkpoint]", VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Allocator a(h.context());
    const Stream s = h.stream();
    const Stream other = h.device().create_stream();
    const PoolId pool = a.create_pool();
    std::vector<void*> rec = allocate_in(a, pool, s, {6 * MiB});
    const PoolCheckpoint cp = a.checkpoint_pool(pool);
    a.record_stream(rec[0], other);
    h.device().block(other, 300);  // work of `other` on the block, still queued
    a.deallocate(rec[0], s);
    const CheckpointDelta d = a.restore_pool(cp);
    CHECK(d.allocated == rec);
    CHECK_FALSE(h.still_busy(other));  // waited for before the block was handed out
    a.deallocate(rec[0], s);
    a.release_pool(pool);
    h.device().synchronize(other);
    a.release_stream(other);
    h.device().destroy_stream(other);
    check_heap_accounting(h, a);
  }
  CHECK(h.destroy_context_and_check_no_leak());
}
