#!/usr/bin/env python3
"""PyTorch features that reach vmmalloc's graph pools and limits under
install(): CUDA-graph trees (torch.compile mode="reduce-overhead", which
checkpoints graph pools) and the per-process memory fraction. Each scenario
runs in a fresh process:
    python tests/python/graph_scenarios.py NAME [ARG...]
Prints ``RESULT {json}`` as its last line; exit 0 means its checks passed.
"""

from __future__ import annotations

import sys
import time

import torch

import vmmalloc.torch as vt
from scenarios import MIB, deterministic, main, result, small_transformer


def _install(allocator: str) -> None:
    assert allocator in ("vmmalloc", "torch"), allocator
    if allocator == "vmmalloc":
        vt.install()


_captures = [0]


def _count_captures() -> None:
    """Counts CUDA-graph captures (cudagraph trees capture through
    torch.cuda.graph, which calls CUDAGraph.capture_begin)."""
    original = torch.cuda.CUDAGraph.capture_begin

    def counted(self, *args, **kwargs):
        _captures[0] += 1
        return original(self, *args, **kwargs)

    torch.cuda.CUDAGraph.capture_begin = counted


def reduce_overhead(allocator: str) -> None:
    """torch.compile(mode="reduce-overhead") of a small transformer: inference
    over two batch sizes (two graphs in one tree, its pool checkpointed and
    restored as the tree switches between them), then compiled training
    steps. Prints outputs and losses for comparison with PyTorch's
    allocator, and the number of CUDA-graph captures."""
    _install(allocator)
    _count_captures()
    deterministic()
    vocab = 512
    model = small_transformer(vocab).cuda()
    gen = torch.Generator().manual_seed(2)
    inputs = {b: torch.randint(0, vocab, (b, 32), generator=gen).cuda() for b in (4, 8)}
    infer = torch.compile(model, mode="reduce-overhead")
    outputs = []
    with torch.no_grad():
        for _ in range(4):
            for b in (4, 8, 4):
                y = infer(inputs[b])
                outputs.append(float(y.double().sum().item()))
                del y
    torch.cuda.synchronize()
    reserved_inference = torch.cuda.memory_reserved()

    opt = torch.optim.SGD(model.parameters(), lr=1e-2)

    def step_fn(tokens):
        logits = model(tokens[:, :-1])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, vocab),
                                                 tokens[:, 1:].reshape(-1))

    step = torch.compile(step_fn, mode="reduce-overhead")
    tokens = torch.randint(0, vocab, (4, 33), generator=gen).cuda()
    losses = []
    for _ in range(4):
        opt.zero_grad(set_to_none=True)
        loss = step(tokens)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    torch.cuda.synchronize()
    backend = torch.cuda.get_allocator_backend()
    if allocator == "vmmalloc":
        assert backend == "vmmalloc", backend
    result(outputs=outputs, losses=losses, backend=backend,
           reserved_inference=reserved_inference, reserved=torch.cuda.memory_reserved(),
           captures=_captures[0])


def memory_fraction() -> None:
    """torch.cuda.set_per_process_memory_fraction caps vmmalloc at run time
    (as PyTorch's test_set_per_process_memory_fraction): a larger request
    raises torch.OutOfMemoryError with PyTorch's leading sentence, what fits
    under the cap is served, and lifting the cap serves the refused size."""
    vt.install()
    total = torch.cuda.get_device_properties(0).total_memory
    assert torch.cuda.get_per_process_memory_fraction() == 1.0
    keep = torch.ones(MIB, device="cuda")
    torch.cuda.set_per_process_memory_fraction(0.1)
    assert torch.cuda.get_per_process_memory_fraction() == 0.1
    big = int(total * 0.15)
    try:
        torch.empty(big, dtype=torch.uint8, device="cuda")
    except torch.OutOfMemoryError as e:
        message = str(e)
    else:
        raise AssertionError("an allocation of 0.15 of the device under a 0.1 cap did not raise")
    assert message.startswith("CUDA out of memory. Tried to allocate "), message
    fits = torch.empty(int(total * 0.05), dtype=torch.uint8, device="cuda")
    fits.fill_(7)
    assert int(fits[-1].item()) == 7
    try:
        torch.cuda.set_per_process_memory_fraction(1.5)
    except ValueError as e:
        bad = str(e)
    else:
        raise AssertionError("a fraction of 1.5 was accepted")
    assert torch.cuda.get_per_process_memory_fraction() == 0.1
    torch.cuda.set_per_process_memory_fraction(1.0)
    served = torch.empty(big, dtype=torch.uint8, device="cuda")
    served.fill_(3)
    assert int(served[0].item()) == 3 and keep.sum().item() == MIB
    result(message=message, bad=bad)


def mem_pool_installed() -> None:
    """torch.cuda.MemPool with vmmalloc installed (as PyTorch's MemPool tests):
    allocations under use_mem_pool land in the pool and its freed memory is
    kept for it, use counts follow PyTorch's, deleting the pool hands its
    memory back, a use_on_oom pool serves other allocations when no new
    memory may be mapped, and a graph captured into a MemPool replays."""
    import gc

    vt.install()
    n = 64 * MIB
    pool = torch.cuda.MemPool()
    assert pool.use_count() == 1, pool.use_count()
    with torch.cuda.use_mem_pool(pool):
        assert pool.use_count() == 2, pool.use_count()
        x = torch.ones(n // 4, device="cuda")
    assert pool.use_count() == 1, pool.use_count()
    x_addr = x.data_ptr()
    del x
    outside = torch.empty(n // 4, device="cuda")
    assert outside.data_ptr() != x_addr, "a block freed in the pool served an allocation outside it"
    with torch.cuda.use_mem_pool(pool):
        again = torch.empty(n // 4, device="cuda")
    assert again.data_ptr() == x_addr, "the pool did not reuse its own free block"
    del again, outside
    torch.cuda.synchronize()
    reserved_with_pool = vt.memory_stats()["reserved_bytes"]
    del pool
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    for _ in range(200):  # unmaps finish on vmmalloc's reclaimer thread
        reserved_after = vt.memory_stats()["reserved_bytes"]
        if reserved_after <= reserved_with_pool - n:
            break
        time.sleep(0.01)
    assert reserved_after <= reserved_with_pool - n, (reserved_with_pool, reserved_after)

    # use_on_oom: with no new device memory allowed, an allocation outside
    # the pool takes the pool's free block.
    spare = torch.cuda.MemPool(use_on_oom=True)
    with torch.cuda.use_mem_pool(spare):
        block = torch.empty(4 * n, dtype=torch.uint8, device="cuda")
    block_addr = block.data_ptr()
    del block
    torch.cuda.set_per_process_memory_fraction(0.0)
    try:
        served = torch.empty(2 * n, dtype=torch.uint8, device="cuda")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert block_addr <= served.data_ptr() < block_addr + 4 * n, "use_on_oom pool not used"
    served.fill_(5)
    assert int(served[-1].item()) == 5
    del served, spare
    gc.collect()

    # A CUDA graph captured into a MemPool.
    gpool = torch.cuda.MemPool()
    static_in = torch.full((1 << 20,), 3.0, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        static_in * 2  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, pool=gpool.id):
        out = static_in * 2
    static_in.fill_(5.0)
    g.replay()
    torch.cuda.synchronize()
    assert float(out[0].item()) == 10.0 and float(out[-1].item()) == 10.0
    result(reserved_with_pool=reserved_with_pool, reserved_after=reserved_after,
           graph_pool_use_count=gpool.use_count())


SCENARIOS = {f.__name__: f for f in (reduce_overhead, memory_fraction, mem_pool_installed)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], SCENARIOS, "graph_scenarios.py"))
