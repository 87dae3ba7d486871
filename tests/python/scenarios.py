#!/usr/bin/env python3
"""The PyTorch integration's scenarios, each run in a fresh process.

vmmalloc.torch.install() must come before PyTorch's first CUDA allocation,
once per process, so every scenario gets a process of its own:

    python tests/python/scenarios.py NAME [ARG...]

A scenario checks what it can itself (assert) and prints its figures as the
last line of stdout, ``RESULT {json}``, for checks that compare processes
(test_torch.py). Exit status 0 means every check passed.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

import vmmalloc.torch as vt

MIB = 1 << 20


def result(**figures) -> None:
    print("RESULT " + json.dumps(figures), flush=True)


# --------------------------------------------------------------- helpers


_cycles_per_ms: float | None = None


def sleep_ms(ms: float) -> None:
    """Queue a kernel spinning about `ms` milliseconds on the current stream
    (torch.cuda._sleep counts clock cycles: calibrated once, at full clock)."""
    global _cycles_per_ms
    if _cycles_per_ms is None:
        cycles = 20_000_000
        torch.cuda._sleep(5 * cycles)  # brings the clock up
        rates = []
        for _ in range(3):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.cuda._sleep(cycles)
            end.record()
            end.synchronize()
            rates.append(cycles / start.elapsed_time(end))
        _cycles_per_ms = max(rates)  # the fastest clock seen: never spins shorter than asked
    torch.cuda._sleep(int(ms * _cycles_per_ms))


def deterministic() -> None:
    """Settings under which a run's numbers do not depend on timing or on
    which addresses the allocator hands out. Attention runs on the math
    backend (the fused ones have non-deterministic backward passes)."""
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.enable_flash_sdp(False)
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    torch.backends.cuda.enable_math_sdp(True)
    if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        torch.backends.cuda.enable_cudnn_sdp(False)


def small_transformer(vocab: int = 512, width: int = 128) -> torch.nn.Module:
    layer = torch.nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=4 * width, dropout=0.0,
                                             batch_first=True)
    return torch.nn.Sequential(
        torch.nn.Embedding(vocab, width),
        torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False),
        torch.nn.Linear(width, vocab),
    )


# ------------------------------------------------------------- scenarios


def train(allocator: str) -> None:
    """A few training steps of a small transformer, variable batch and
    sequence length, deterministic; prints the losses."""
    assert allocator in ("vmmalloc", "torch"), allocator
    if allocator == "vmmalloc":
        vt.install()
    deterministic()
    vocab = 512
    model = small_transformer(vocab).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for step in range(8):
        batch = 4 + 4 * (step % 3)
        seq = 32 * (1 + step % 4)
        tokens = torch.randint(0, vocab, (batch, seq + 1), generator=gen).cuda()
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    backend = torch.cuda.get_allocator_backend()
    if allocator == "vmmalloc":
        assert backend == "vmmalloc", backend
        assert vt.memory_stats()["allocations"] > 0
    result(losses=losses, backend=backend)


def stats() -> None:
    """torch.cuda.memory_stats() and friends follow what was allocated."""
    vt.install()
    assert vt.is_installed()
    x0 = torch.empty(1, device="cuda")  # CUDA up, one block live
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_stats()
    n = 64 * MIB + 1000
    x = torch.empty(n, dtype=torch.uint8, device="cuda")
    s = torch.cuda.memory_stats()
    grew = s["allocated_bytes.all.current"] - base["allocated_bytes.all.current"]
    assert n <= grew <= n + 2 * MIB, (n, grew)
    assert s["requested_bytes.all.current"] - base["requested_bytes.all.current"] == n
    assert s["allocation.all.current"] == base["allocation.all.current"] + 1
    assert s["allocation.all.allocated"] >= base["allocation.all.allocated"] + 1
    assert s["reserved_bytes.all.current"] >= s["allocated_bytes.all.current"]
    assert torch.cuda.memory_allocated() == s["allocated_bytes.all.current"]
    assert torch.cuda.memory_reserved() == s["reserved_bytes.all.current"]
    assert torch.cuda.max_memory_allocated() >= base["allocated_bytes.all.current"] + n
    # Every key PyTorch fills: the block is large (small_pool unmoved), the
    # running totals grew by it, small + large = all.
    moved = {k: s[k] - base[k] for k in s}
    assert moved["allocated_bytes.large_pool.current"] == grew
    assert moved["allocated_bytes.small_pool.current"] == 0
    assert moved["allocated_bytes.all.allocated"] == grew
    assert moved["requested_bytes.large_pool.allocated"] == n
    assert moved["allocation.large_pool.allocated"] == 1
    for stat in ("allocated_bytes", "requested_bytes", "allocation", "active", "active_bytes"):
        for field in ("current", "allocated", "freed"):
            assert s[f"{stat}.all.{field}"] == (
                s[f"{stat}.small_pool.{field}"] + s[f"{stat}.large_pool.{field}"]), (stat, field)
    assert s["active.all.peak"] >= s["active.all.current"]
    assert s["max_split_size"] == -1
    assert s["oversize_allocations.current"] == 0 and s["oversize_segments.current"] == 0
    # The package's own counters agree with PyTorch's view of them.
    own = vt.memory_stats()
    assert own["allocated_bytes"] == torch.cuda.memory_allocated()
    assert own["reserved_bytes"] == torch.cuda.memory_reserved()
    peak = torch.cuda.max_memory_allocated()
    del x
    after = torch.cuda.memory_stats()
    assert after["allocated_bytes.all.current"] == base["allocated_bytes.all.current"]
    assert after["allocation.all.freed"] >= base["allocation.all.freed"] + 1
    assert after["allocated_bytes.all.freed"] - base["allocated_bytes.all.freed"] == grew
    assert torch.cuda.max_memory_allocated() == peak  # peaks outlive the free
    torch.cuda.reset_peak_memory_stats()
    assert torch.cuda.max_memory_allocated() == torch.cuda.memory_allocated()
    assert torch.cuda.max_memory_reserved() >= torch.cuda.memory_reserved()
    torch.cuda.reset_accumulated_memory_stats()
    acc = torch.cuda.memory_stats()
    assert acc["allocation.all.allocated"] == 0 and acc["allocation.all.freed"] == 0
    assert acc["allocated_bytes.all.allocated"] == 0 and acc["requested_bytes.all.freed"] == 0
    assert acc["num_alloc_retries"] == 0
    y = torch.empty(MIB, device="cuda")
    z = torch.empty(10, device="cuda")  # 40 bytes: a small block
    acc = torch.cuda.memory_stats()
    assert acc["allocation.all.allocated"] == 2
    assert acc["allocation.large_pool.allocated"] == 1 and acc["allocation.small_pool.allocated"] == 1
    assert acc["allocated_bytes.large_pool.allocated"] == 4 * MIB
    assert acc["requested_bytes.small_pool.allocated"] == 40
    del z
    summary = torch.cuda.memory_summary()
    assert "Allocated memory" in summary
    del x0, y
    result(allocated=s["allocated_bytes.all.current"], reserved=s["reserved_bytes.all.current"])


def record_stream() -> None:
    """A block used on another stream is not reused before that stream's work."""
    vt.install()
    side = torch.cuda.Stream()
    n = 32 * MIB // 4
    x = torch.ones(n, device="cuda")
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        sleep_ms(300)   # the side stream reads x only after this
        y = x * 2
    x.record_stream(side)
    ptr = x.data_ptr()
    del x
    # Same size on the default stream: had record_stream been ignored, x's
    # block would be reused at once and overwritten before `side` reads it.
    z = torch.empty(n, device="cuda")
    z.fill_(7.0)
    reused = z.data_ptr() == ptr
    torch.cuda.synchronize()
    assert torch.all(y == 2).item(), "the side stream read a block that was reused under it"
    # Without record_stream, a block freed on its stream is that stream's
    # again at once: the same sequence then hands it over (reported, so the
    # figures show the check above was not passed for want of reuse).
    a = torch.ones(n, device="cuda")
    pa = a.data_ptr()
    del a
    b = torch.empty(n, device="cuda")
    result(reused_while_recorded=reused, reused_without_record=b.data_ptr() == pa)


def graphs() -> None:
    """CUDA graph capture and replay: make_graphed_callables and a captured
    training step, compared with eager runs of the same model."""
    vt.install()

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 8)).cuda()

    # 1. make_graphed_callables: forward and backward replayed.
    eager, graphed = make(), make()
    sample = torch.randn(16, 64, device="cuda", requires_grad=True)
    graphed = torch.cuda.make_graphed_callables(graphed, (sample,))
    for i in range(3):
        inp = torch.randn(16, 64, device="cuda", generator=None) + i
        a = inp.clone().requires_grad_()
        b = inp.clone().requires_grad_()
        ea, eb = eager(a), graphed(b)
        torch.testing.assert_close(eb, ea)
        ea.sum().backward()
        eb.sum().backward()
        torch.testing.assert_close(b.grad, a.grad)

    # 2. A whole training step captured in one graph, replayed 5 times.
    model_e, model_g = make(), make()
    opt_e = torch.optim.SGD(model_e.parameters(), lr=0.1)
    opt_g = torch.optim.SGD(model_g.parameters(), lr=0.1)
    static_x = torch.randn(32, 64, device="cuda")
    static_y = torch.randn(32, 8, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as PyTorch's docs do
        for _ in range(3):
            opt_g.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model_g(static_x), static_y).backward()
            opt_g.step()
    torch.cuda.current_stream().wait_stream(side)
    for _ in range(3):  # the eager twin takes the same warm-up steps
        opt_e.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model_e(static_x), static_y).backward()
        opt_e.step()
    g = torch.cuda.CUDAGraph()
    opt_g.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        static_loss = torch.nn.functional.mse_loss(model_g(static_x), static_y)
        static_loss.backward()
        opt_g.step()
    losses_g, losses_e = [], []
    for i in range(5):
        data_x = torch.randn(32, 64, device="cuda") * (1 + i)
        data_y = torch.randn(32, 8, device="cuda")
        static_x.copy_(data_x)
        static_y.copy_(data_y)
        g.replay()
        losses_g.append(static_loss.item())
        opt_e.zero_grad(set_to_none=True)
        le = torch.nn.functional.mse_loss(model_e(data_x), data_y)
        le.backward()
        opt_e.step()
        losses_e.append(le.item())
    for pg, pe in zip(model_g.parameters(), model_e.parameters()):
        torch.testing.assert_close(pg, pe, rtol=1e-4, atol=1e-5)
    assert all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for a, b in zip(losses_g, losses_e)), (losses_g, losses_e)
    # Destroying the graph releases its pool (releasePool): allocations go on.
    reserved_with_graph = torch.cuda.memory_reserved()
    del g, static_loss
    opt_g.zero_grad(set_to_none=True)  # the gradients were the pool's blocks
    torch.cuda.synchronize()
    after = torch.ones(8 * MIB, device="cuda")
    assert after.sum().item() == 8 * MIB
    result(losses_graph=losses_g, losses_eager=losses_e, reserved_with_graph=reserved_with_graph)


def oom() -> None:
    """Out of memory raises torch.OutOfMemoryError with vmmalloc's message;
    the process keeps working."""
    vt.install()
    keep = torch.ones(MIB, device="cuda")
    total = torch.cuda.get_device_properties(0).total_memory
    try:
        torch.empty(2 * total, dtype=torch.uint8, device="cuda")
    except torch.OutOfMemoryError as e:
        message = str(e)
    else:
        raise AssertionError("allocating twice the device's memory did not raise")
    # PyTorch's leading sentence (tools match it), then vmmalloc's account.
    assert message.startswith("CUDA out of memory. Tried to allocate "), message
    assert " out of memory." in message and "GPU 0 has a total capacity of" in message, message
    assert "vmmalloc" in message, message
    assert torch.cuda.memory_stats()["num_ooms"] == 1
    # Still working: allocate, compute, free.
    x = torch.randn(4096, 4096, device="cuda")
    y = (x @ x).sum().item()
    assert keep.sum().item() == MIB and y == y
    result(message=message)


def install_after_allocation() -> None:
    """install() after PyTorch allocated says so and changes nothing."""
    x = torch.ones(1000, device="cuda")
    try:
        vt.install()
    except RuntimeError as e:
        message = str(e)
    else:
        raise AssertionError("install() after an allocation did not raise")
    assert "before PyTorch allocates CUDA memory" in message, message
    assert not vt.is_installed()
    assert torch.cuda.get_allocator_backend() == "native"
    assert (x + 1).sum().item() == 2000  # PyTorch's allocator still serves
    result(message=message)


def install_after_init() -> None:
    """install() after CUDA is initialised but before any allocation works."""
    torch.cuda.init()
    torch.cuda.set_device(0)
    vt.install()
    assert vt.is_installed()
    before = vt.memory_stats()["allocations"]
    x = torch.ones(1000, device="cuda")
    assert vt.memory_stats()["allocations"] == before + 1
    assert x.sum().item() == 1000
    result(backend=torch.cuda.get_allocator_backend())


def mem_pool() -> None:
    """mem_pool(): allocations inside use_mem_pool come from vmmalloc, the
    rest from PyTorch's allocator."""
    assert not vt.is_installed()
    warm = torch.empty(1, device="cuda")
    before = vt.memory_stats()
    pool = vt.mem_pool()
    with torch.cuda.use_mem_pool(pool):
        x = torch.ones(64 * MIB // 4, device="cuda")
    inside = vt.memory_stats()
    assert inside["allocated_bytes"] >= before["allocated_bytes"] + 64 * MIB, (before, inside)
    y = torch.ones(64 * MIB // 4, device="cuda")
    outside = vt.memory_stats()
    assert outside["allocated_bytes"] == inside["allocated_bytes"], "outside the pool went to vmmalloc"
    assert torch.cuda.get_allocator_backend() == "native"
    assert (x + y).sum().item() == 2 * 64 * MIB // 4
    del x, y, warm
    del pool  # PyTorch hands the pool's segments back to vmmalloc
    torch.cuda.synchronize()
    import gc

    gc.collect()
    after = vt.memory_stats()
    result(inside=inside["allocated_bytes"], after=after["allocated_bytes"])


def ipc() -> None:
    """torch.multiprocessing cannot share vmmalloc tensors (legacy CUDA IPC);
    it fails with a message saying so instead of sharing garbage."""
    vt.install()
    import torch.multiprocessing  # noqa: F401  (registers the CUDA tensor reductions)
    from multiprocessing.reduction import ForkingPickler

    t = torch.ones(1000, device="cuda")
    try:
        ForkingPickler.dumps(t)
    except RuntimeError as e:
        message = str(e)
    else:
        raise AssertionError("pickling a vmmalloc CUDA tensor for another process did not raise")
    assert "vmmalloc" in message and "IPC" in message, message
    result(message=message)


def empty_cache_no_wait() -> None:
    """torch.cuda.empty_cache() waits for no GPU work with vmmalloc; the
    memory goes back to the device once the work that used it is done."""
    vt.install()
    blocks = [torch.empty(64 * MIB, dtype=torch.uint8, device="cuda") for _ in range(4)]
    for b in blocks:
        b.fill_(1)
    del blocks, b
    reserved = torch.cuda.memory_reserved()
    sleep_ms(300)
    queued = torch.cuda.Event()
    queued.record()
    t0 = time.perf_counter()
    torch.cuda.empty_cache()
    took_ms = (time.perf_counter() - t0) * 1e3
    done = queued.query()
    assert not done and took_ms < 50, (took_ms, done)
    torch.cuda.synchronize()
    # The unmaps ran in the background once the fences completed; what they
    # freed sits in vmmalloc's chunk cache until the next empty_cache().
    deadline = time.monotonic() + 5
    while vt.memory_stats()["pending_bytes"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert vt.memory_stats()["pending_bytes"] == 0
    torch.cuda.empty_cache()
    after = torch.cuda.memory_reserved()
    assert after <= reserved - 4 * 64 * MIB, (reserved, after)
    result(empty_cache_ms=took_ms, reserved_before=reserved, reserved_after=after)


def allocator_settings() -> None:
    """PyTorch's allocator settings are PyTorch's: setting them changes
    nothing for vmmalloc, which keeps serving."""
    vt.install()
    torch.cuda.memory._set_allocator_settings("garbage_collection_threshold:0.8")
    before = vt.memory_stats()["allocations"]
    x = torch.ones(1000, device="cuda")
    assert vt.memory_stats()["allocations"] == before + 1
    assert torch.cuda.get_allocator_backend() == "vmmalloc"
    del x
    result()


def unsupported() -> None:
    """What vmmalloc does not provide under PyTorch fails with a message
    that says what to use instead, and the process goes on."""
    vt.install()
    x = torch.ones(1000, device="cuda")
    messages = {}

    def expect_error(name, fn, *words):
        try:
            fn()
        except RuntimeError as e:
            messages[name] = str(e)
        else:
            raise AssertionError(f"{name} did not raise")
        for w in words:
            assert w in messages[name], (name, messages[name])

    expect_error("memory_snapshot", torch.cuda.memory_snapshot, "vmmalloc.torch.snapshot()")
    expect_error("_record_memory_history", lambda: torch.cuda.memory._record_memory_history(),
                 "recordHistory")
    assert x.sum().item() == 1000
    result(messages=messages)


def workspace_keeps_tensors(install: str) -> None:
    """Tensors taken before a grow stay valid and keep their data; tensors
    past a shrink are refused."""
    if install == "1":
        vt.install()
    ws = vt.Workspace(8 << 30, name="scenario")
    base = ws.data_ptr
    ws.grow(4 * MIB)
    half = MIB // 2  # 2 MiB of float32
    a = ws.tensor((half,), torch.float32)
    assert a.data_ptr() == base
    ref = torch.arange(half, dtype=torch.float32, device="cuda")
    a.copy_(ref)
    h = ws.tensor((2, 3), torch.float16, offset=4 * MIB - 12)  # the last 12 bytes of 4 MiB
    h.fill_(1.5)
    ws.grow(3 << 30)
    assert ws.data_ptr == base and ws.size == 3 << 30 and ws.mapped_bytes >= 3 << 30
    b = ws.tensor(((3 << 30) // 4,), torch.float32)
    assert b.data_ptr() == base
    b[MIB:].fill_(-1.0)  # from 4 MiB on: the memory the grow added
    assert torch.equal(a, ref) and torch.equal(b[:half], ref), "the grow lost data"
    assert torch.all(h == 1.5).item()
    assert torch.all(b[MIB:] == -1.0).item()
    a.record_stream(torch.cuda.Stream())  # not an allocator block: ignored, no error
    try:
        ws.tensor(((3 << 30) // 4 + 1,), torch.float32)
    except ValueError as e:
        assert "grow() it first" in str(e), str(e)
    else:
        raise AssertionError("a tensor past the workspace's size was made")
    try:
        ws.grow(9 << 30)
    except ValueError as e:
        assert "capacity" in str(e), str(e)
    else:
        raise AssertionError("grow past the capacity did not raise")
    try:
        ws.tensor((4,), torch.float32, offset=2)
    except ValueError as e:
        assert "multiple of 4" in str(e), str(e)
    else:
        raise AssertionError("a misaligned offset was accepted")
    stats = vt.memory_stats()
    assert stats["workspaces"] == 1 and stats["workspace_bytes"] == 3 << 30, stats
    ws.shrink(4 * MIB)
    torch.cuda.synchronize()
    assert ws.size == 4 * MIB and torch.equal(a, ref) and torch.all(h == 1.5).item()
    snap = vt.snapshot()
    assert "scenario" in json.dumps(snap), "the workspace is missing from the snapshot"
    del ws, b, h
    assert torch.equal(a, ref)  # `a` keeps the workspace alive
    freed = vt.empty_cache()
    result(snapshot_keys=sorted(snap), empty_cache_bytes=freed)


def workspace_grow_during_kernel(install: str) -> None:
    """Growing while a kernel on another stream uses the workspace neither
    waits for it nor disturbs it."""
    if install == "1":
        vt.install()
    ws = vt.Workspace(16 << 30)
    ws.grow(64 * MIB)
    a = ws.tensor((64 * MIB // 4,), torch.float32)
    a.fill_(1.0)
    torch.cuda.synchronize()
    sleep_ms(1)  # calibrates the spin, on the default stream
    side = torch.cuda.Stream()
    # Every kernel used below once first: with CUDA's lazy module loading
    # (PyTorch's default), the first launch of a kernel while another runs
    # blocks the host until that one ends (seen on the H200: queueing
    # `a.mul_` behind a 1 s spin took 1 s), which is no grow's doing.
    with torch.cuda.stream(side):
        sleep_ms(1)
        a.mul_(1.0)
        a[:1].copy_(a[-1:])
    torch.cuda.synchronize()
    began = torch.cuda.Event(enable_timing=True)
    done = torch.cuda.Event(enable_timing=True)
    h0 = time.perf_counter()
    with torch.cuda.stream(side):
        began.record()
        sleep_ms(1000)
        a.mul_(3.0)   # uses the workspace after the spin
        done.record()
    queued_ms = (time.perf_counter() - h0) * 1e3  # host time to queue it all
    running_before = not done.query()
    t0 = time.perf_counter()
    ws.grow(8 << 30)
    grow_ms = (time.perf_counter() - t0) * 1e3
    running_after = not done.query()
    done.synchronize()
    spin_ms = began.elapsed_time(done)
    timing = (f"queueing took {queued_ms:.1f} ms, the grow {grow_ms:.1f} ms, the spin "
              f"{spin_ms:.0f} ms")
    assert running_before, "the work finished before the grow began: " + timing
    assert running_after, "the grow waited for the kernel on the other stream: " + timing
    assert grow_ms < 100, timing
    tail = ws.tensor(((8 << 30) // 4 - 64 * MIB // 4,), torch.float32, offset=64 * MIB)
    tail.fill_(5.0)   # the memory the grow added
    side.synchronize()
    torch.cuda.synchronize()
    assert torch.all(a == 3.0).item() and torch.all(tail == 5.0).item()
    # Shrink while queued work on `side` still reads the tail: the call does
    # not wait, and the tail stays mapped until that work is done.
    with torch.cuda.stream(side):
        sleep_ms(1000)
        a[:1].copy_(tail[-1:])   # the tail's last word, read after the spin
    t0 = time.perf_counter()
    ws.shrink(64 * MIB, stream=side)
    shrink_ms = (time.perf_counter() - t0) * 1e3
    still_running = not side.query()
    side.synchronize()
    assert still_running, "the shrink waited for the work on its stream"
    assert a[0].item() == 5.0 and torch.all(a[1:] == 3.0).item()
    assert shrink_ms < 100, shrink_ms
    result(grow_ms=grow_ms, shrink_ms=shrink_ms, spin_ms=spin_ms, queued_ms=queued_ms)


SCENARIOS = {f.__name__: f for f in (
    train, stats, record_stream, graphs, oom, install_after_allocation, install_after_init,
    mem_pool, ipc, empty_cache_no_wait, allocator_settings, unsupported,
    workspace_keeps_tensors, workspace_grow_during_kernel)}


def main(argv: list[str], scenarios: dict | None = None, prog: str = "scenarios.py") -> int:
    """Runs scenario argv[0] of `scenarios` (default: this file's) with the
    rest as its arguments; the scenario files' common command line."""
    scenarios = SCENARIOS if scenarios is None else scenarios
    if len(argv) < 1 or argv[0] not in scenarios:
        print(f"usage: {prog} NAME [ARG...]; NAME one of {', '.join(sorted(scenarios))}",
              file=sys.stderr)
        return 2
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    scenarios[argv[0]](*argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
