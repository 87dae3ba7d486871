#!/usr/bin/env python3
"""Replay one allocation trace through PyTorch's CUDA caching allocator.

The per-system replayer of bench/replay.py for the torch systems: run it in
a fresh process with PYTORCH_CUDA_ALLOC_CONF already set (bench/replay.py
does), since the allocator's configuration is read once, at CUDA init.

Every `a` event is `torch.cuda.caching_allocator_alloc(size, device,
stream)`, every `f` event `torch.cuda.caching_allocator_delete(ptr)`. Trace
stream 0 is the default stream (as in the recorded programs); every other
number gets a `torch.cuda.Stream` of its own.

Device memory in use is `cuMemGetInfo` (total - free) called on libcuda.so.1
directly through ctypes (never through torch or the runtime), minus the
reading taken after torch's CUDA init and the streams' creation, before the
first event. It is read after every event: the caching allocator only grows
inside an allocation (it frees cached segments inside one only on an
out-of-memory retry, which would still leave the peak at the reading
before), so the reading after each call is the peak of the call.

Prints one JSON row (the replay fields of docs/benchmarks.md, with
allocator_peak_bytes = torch.cuda.max_memory_reserved()) as the last line of
stdout.

    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \\
        python3 bench/replay_torch.py --system torch-expandable bench/traces/gpt2-train.trace.gz

Python standard library + torch.
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import json
import os
import sys
import time


def read_trace(path: str) -> tuple[list[tuple[bool, int, int, int]], int, int]:
    """(events as (is_alloc, block, size, stream), blocks, peak live bytes).

    The same checks as the C++ reader (tools/trace): a malformed line is an
    error naming file and line."""
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    events = []
    live: dict[str, tuple[int, int]] = {}
    blocks = cur = peak = 0
    with opener(path, "rt") as f:
        header = f.readline()
        if not header.startswith("#"):
            raise SystemExit(f"{path}:1: the first line must be a header starting with '#'")
        for n, line in enumerate(f, start=2):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 4 or fields[0] not in ("a", "f"):
                raise SystemExit(f"{path}:{n}: malformed event {line.strip()!r}")
            op, addr, size_s, stream_s = fields
            try:
                size, stream = int(size_s), int(stream_s)
                int(addr, 16)
            except ValueError:
                raise SystemExit(f"{path}:{n}: malformed event {line.strip()!r}")
            if op == "a":
                if addr in live or size <= 0:
                    raise SystemExit(f"{path}:{n}: bad allocation {line.strip()!r}")
                live[addr] = (blocks, size)
                events.append((True, blocks, size, stream))
                blocks += 1
                cur += size
                peak = max(peak, cur)
            else:
                if addr not in live or live[addr][1] != size:
                    raise SystemExit(f"{path}:{n}: free of a block that is not live {line.strip()!r}")
                block, _ = live.pop(addr)
                events.append((False, block, size, stream))
                cur -= size
    return events, blocks, peak


def trace_stem(path: str) -> str:
    s = os.path.basename(path)
    for suffix in (".gz", ".trace"):
        if s.endswith(suffix) and len(s) > len(suffix):
            s = s[: -len(suffix)]
    return s


class DeviceMemory:
    """cuMemGetInfo on the driver, through ctypes."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")
        self.fn = self.lib.cuMemGetInfo_v2
        self.fn.argtypes = [ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
        self.fn.restype = ctypes.c_int
        self.free = ctypes.c_size_t()
        self.total = ctypes.c_size_t()
        self.free_p = ctypes.byref(self.free)
        self.total_p = ctypes.byref(self.total)

    def used(self) -> int:
        r = self.fn(self.free_p, self.total_p)
        if r != 0:
            raise RuntimeError(f"cuMemGetInfo failed: CUresult {r}")
        return self.total.value - self.free.value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--system", required=True, help="system name of the row (torch-default, ...)")
    ap.add_argument("--device", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    events, blocks, peak_live = read_trace(args.trace)
    load_s = time.perf_counter() - t0

    import torch

    torch.cuda.set_device(args.device)
    torch.cuda.init()
    backend = torch.cuda.get_allocator_backend()
    dev = torch.device("cuda", args.device)
    stream_numbers = sorted({e[3] for e in events})
    streams = {0: torch.cuda.default_stream(dev)}
    for n in stream_numbers:
        if n not in streams:
            streams[n] = torch.cuda.Stream(dev)
    stream_ptr = {n: s.cuda_stream for n, s in streams.items()}
    # One allocation and free to be sure every lazy part of the allocator
    # (and its context) is set up before the baseline; then drop the cache.
    p = torch.cuda.caching_allocator_alloc(512, args.device, stream_ptr[0])
    torch.cuda.caching_allocator_delete(p)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    try:
        torch.cuda.reset_peak_memory_stats()
    except RuntimeError:
        pass  # not every backend keeps peaks
    stats0 = torch.cuda.memory_stats() if backend == "native" else {}

    meter = DeviceMemory()
    baseline = meter.used()
    peak_used = baseline
    ptrs = [0] * blocks
    alloc = torch.cuda.caching_allocator_alloc
    delete = torch.cuda.caching_allocator_delete
    used = meter.used
    device = args.device
    t0 = time.perf_counter()
    for is_alloc, block, size, stream in events:
        if is_alloc:
            ptrs[block] = alloc(size, device, stream_ptr[stream])
        else:
            delete(ptrs[block])
            ptrs[block] = 0
        u = used()
        if u > peak_used:
            peak_used = u
    replay_s = time.perf_counter() - t0
    torch.cuda.synchronize()
    peak_used = max(peak_used, used())
    try:
        reserved_peak = torch.cuda.max_memory_reserved(dev)
    except RuntimeError:
        reserved_peak = None
    driver_calls = None
    if backend == "native" and "expandable_segments:true" not in os.environ.get(
            "PYTORCH_CUDA_ALLOC_CONF", "").replace(" ", "").lower():
        # Native allocator, classic segments: each device alloc/free is one
        # cudaMalloc/cudaFree.
        s1 = torch.cuda.memory_stats()
        driver_calls = (s1.get("num_device_alloc", 0) - stats0.get("num_device_alloc", 0)
                        + s1.get("num_device_free", 0) - stats0.get("num_device_free", 0))
    for p in ptrs:
        if p:
            delete(p)
    torch.cuda.synchronize()

    peak_physical = peak_used - baseline
    row = {
        "system": args.system,
        "trace": trace_stem(args.trace),
        "events": len(events),
        "peak_live_bytes": peak_live,
        "peak_physical_bytes": peak_physical,
        "ratio": round(peak_physical / peak_live, 6) if peak_live else None,
        "driver_calls": driver_calls,
        "replay_s": round(replay_s, 6),
        "allocator_peak_bytes": reserved_peak,
    }
    print(f"replay_torch: {args.system} ({backend}, PYTORCH_CUDA_ALLOC_CONF="
          f"{os.environ.get('PYTORCH_CUDA_ALLOC_CONF', '')!r}): {args.trace}: {len(events)} events "
          f"read in {load_s:.2f} s, replayed in {replay_s:.2f} s; peak live {peak_live / 2**30:.3f} GiB, "
          f"device peak {peak_physical / 2**30:.3f} GiB (baseline {baseline / 2**30:.3f} GiB), "
          f"max reserved {reserved_peak} B, ratio {row['ratio']}", file=sys.stderr)
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
