#!/usr/bin/env python3
"""A vLLM-style workspace manager on vmmalloc workspaces.

The shape of vLLM's vllm/v1/worker/workspace.py - ``get_simultaneous(*(shape,
dtype))`` hands out several tensor views of one workspace, one workspace per
micro-batch - built on ``vmmalloc.torch.Workspace`` instead of ``del`` +
``torch.empty``:

- a workspace grows in place: no old and new buffer held together (vLLM's
  2-3x peak), no ``torch.cuda.empty_cache()`` stall waiting for queued work;
- it keeps growing after CUDA-graph capture: the base address never moves,
  so a graph captured over the workspace replays correctly after a grow.
  vLLM has to lock its workspace after capture (``lock_workspace()``) because
  a regrown tensor moves and captured graphs keep the old pointer.

The demonstration at the bottom checks both and prints what it measured:

    PYTHONPATH=python python3 examples/vllm_workspace.py [--install]

(--install also makes vmmalloc PyTorch's allocator for everything else.)
Exit status 0 if every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import threading
import time
from itertools import accumulate

import torch

import vmmalloc.torch as vt

GIB = 1 << 30
MIB = 1 << 20
ALIGN = 256  # bytes between the views of get_simultaneous, as in vLLM

# ------------------------------------------------------------ the manager

_ubatch = threading.local()


def current_ubatch_id() -> int:
    return getattr(_ubatch, "id", 0)


@contextlib.contextmanager
def ubatch(index: int):
    """Run the body as micro-batch `index` (vLLM: dbo_current_ubatch_id())."""
    previous = current_ubatch_id()
    _ubatch.id = index
    try:
        yield
    finally:
        _ubatch.id = previous


def round_up(n: int, unit: int) -> int:
    return (n + unit - 1) // unit * unit


class WorkspaceManager:
    """One growable workspace per micro-batch; views handed out by
    get_simultaneous(). Unlike vLLM's, it needs no lock(): growth never
    moves a workspace, so captured CUDA graphs stay valid."""

    def __init__(self, device: torch.device | str, num_ubatches: int = 1, max_bytes: int = 64 * GIB):
        self.workspaces = [vt.Workspace(max_bytes, device, name=f"ubatch{i}")
                           for i in range(num_ubatches)]

    def get_simultaneous(self, *shapes_and_dtypes: tuple[tuple[int, ...], torch.dtype]) -> list[torch.Tensor]:
        """Tensor views of the current micro-batch's workspace, one per
        (shape, dtype), each starting 256-byte aligned."""
        actual = [math.prod(shape) * dtype.itemsize for shape, dtype in shapes_and_dtypes]
        aligned = [round_up(n, ALIGN) for n in actual]
        offsets = list(accumulate([0] + aligned[:-1]))
        ws = self._ensure_workspace_size(sum(aligned))
        return [ws.tensor(shape, dtype, offset=off)
                for (shape, dtype), off in zip(shapes_and_dtypes, offsets)]

    def _ensure_workspace_size(self, required: int) -> vt.Workspace:
        ws = self.workspaces[current_ubatch_id()]
        if ws.size < required:
            # As vLLM does: every micro-batch's workspace grows together.
            for w in self.workspaces:
                w.grow(required)
        return ws


# ------------------------------------------------------- the demonstration


def spin_cycles_per_ms() -> float:
    cycles = 20_000_000
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(cycles)
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return cycles / start.elapsed_time(end)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--install", action="store_true", help="also make vmmalloc PyTorch's allocator")
    args = ap.parse_args()
    if args.install:
        vt.install()
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(("ok:     " if ok else "FAILED: ") + what, flush=True)
        if not ok:
            failures.append(what)

    device = torch.device("cuda", torch.cuda.current_device())
    cycles_per_ms = spin_cycles_per_ms()
    manager = WorkspaceManager(device, num_ubatches=2)
    streams = [torch.cuda.Stream(device) for _ in manager.workspaces]
    n = 1 << 20

    # 1. A graph captured over micro-batch 0's workspace.
    with ubatch(0), torch.cuda.stream(streams[0]):
        x, y = manager.get_simultaneous(((n,), torch.float32), ((n,), torch.float32))
        x.copy_(torch.arange(n, dtype=torch.float32, device=device))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=streams[0]):
            y.copy_(x * 2 + 1)
        graph.replay()
    streams[0].synchronize()
    check(torch.equal(y, torch.arange(n, dtype=torch.float32, device=device) * 2 + 1),
          "replay before growth: correct")
    base = manager.workspaces[0].data_ptr
    size_before = manager.workspaces[0].size

    # 2. Grow while 200 ms of work - and a replay of the graph - are queued
    #    on the micro-batch's stream.
    with ubatch(0), torch.cuda.stream(streams[0]):
        torch.cuda._sleep(int(200 * cycles_per_ms))
        x.fill_(3.0)
        graph.replay()
        queued = torch.cuda.Event()
        queued.record()
        t0 = time.perf_counter()
        big, = manager.get_simultaneous(((2 * GIB // 2,), torch.bfloat16))  # grows to 2 GiB
        grow_ms = (time.perf_counter() - t0) * 1e3
        still_queued = not queued.query()
    ws0 = manager.workspaces[0]
    print(f"grew micro-batch 0's workspace {size_before} -> {ws0.size} bytes in {grow_ms:.3f} ms; "
          f"mapped {ws0.mapped_bytes} bytes", flush=True)
    check(still_queued, "the grow returned while the queued work was still running")
    check(ws0.data_ptr == base and x.data_ptr() == base and big.data_ptr() == base,
          "the base address did not move")
    check(manager.workspaces[1].size == ws0.size, "every micro-batch's workspace grew")

    # 3. Replay after the growth: the graph still writes the right memory.
    with ubatch(0), torch.cuda.stream(streams[0]):
        streams[0].synchronize()
        check(torch.all(y == 7.0).item(), "the replay queued behind the grow: correct")
        x.copy_(torch.full((n,), -1.0, device=device))
        graph.replay()
        past_views = 2 * n * 4 // big.element_size()  # big's elements past x and y
        big[past_views:].fill_(1.0)  # the new memory is usable beside the graph's views
    streams[0].synchronize()
    ok = torch.all(y == -1.0).item() and torch.all(big[past_views:] == 1.0).item()
    check(ok, "replay after growth: correct at the same address")

    # 4. Micro-batch 1 works on its own workspace and stream concurrently.
    with ubatch(1), torch.cuda.stream(streams[1]):
        a, b = manager.get_simultaneous(((n,), torch.float16), ((4, n), torch.int32))
        a.fill_(0.5)
        b.fill_(7)
    streams[1].synchronize()
    check(a.data_ptr() == manager.workspaces[1].data_ptr and torch.all(b == 7).item(),
          "micro-batch 1 uses its own workspace")

    # 5. Shrink micro-batch 1's workspace while its stream is busy: no wait.
    with torch.cuda.stream(streams[1]):
        torch.cuda._sleep(int(100 * cycles_per_ms))
        busy = torch.cuda.Event()
        busy.record()
    manager.workspaces[1].shrink(64 * MIB, stream=streams[1])
    check(not busy.query(), "the shrink returned while the micro-batch's work was queued")
    torch.cuda.synchronize()

    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
