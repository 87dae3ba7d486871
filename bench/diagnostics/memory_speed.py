#!/usr/bin/env python3
"""Do kernels run as fast on vmmalloc's memory as on PyTorch's? A diagnostic
on the GPU machine (writes nothing to bench/results).

For each system, in a process of its own (torch-default: PyTorch's caching
allocator, whose large blocks are cudaMalloc segments; vmmalloc:
vmmalloc.torch.install(), blocks in chunks of 2-16 MiB mapped with the
virtual memory API), it allocates tensors of the sizes a GPT-2 training step
uses (1-64 MiB, about 4 GiB in all, shuffled) and times with CUDA events,
the median of --reps: a streaming copy over every tensor (bandwidth, one
pass over many mappings), a random gather from one 2 GiB tensor (TLB reach:
random pages) and a bf16 matmul on tensors from the set.

    PYTHONPATH=python python3 bench/diagnostics/memory_speed.py [--reps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SYSTEMS = ["torch-default", "vmmalloc"]


def worker(system: str, reps: int) -> dict:
    import random

    import torch

    if system == "vmmalloc":
        import vmmalloc.torch as vt

        vt.install()
    dev = torch.device("cuda", 0)
    rng = random.Random(0)
    sizes = [rng.choice([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]) << 20 for _ in range(150)]
    srcs = [torch.ones(n // 2, dtype=torch.bfloat16, device=dev) for n in sizes]
    dsts = [torch.empty_like(s) for s in srcs]
    big = torch.arange(1 << 29, dtype=torch.float32, device=dev)  # 2 GiB
    idx = torch.randint(0, 1 << 29, (1 << 24,), device=dev)
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=dev)
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device=dev)
    total = sum(sizes)

    def timed(fn) -> float:
        times = []
        for _ in range(reps + 2):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
        return statistics.median(times[2:])

    def copy_all():
        for d, s in zip(dsts, srcs):
            d.copy_(s)

    copy_ms = timed(copy_all)
    gather_ms = timed(lambda: big.index_select(0, idx))
    matmul_ms = timed(lambda: a @ b)
    return {"system": system, "copy_GBps": 2 * total / copy_ms / 1e6, "gather_ms": gather_ms,
            "matmul_TFLOPs": 2 * 8192 ** 3 / matmul_ms / 1e9, "tensors": len(sizes),
            "bytes": total}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="processes per system, alternating")
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.reps)), flush=True)
        return 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "python"), env.get("PYTHONPATH", "")) if p)
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    for _ in range(args.rounds):
        for s in SYSTEMS:
            out = subprocess.run([sys.executable, __file__, "--worker", s, "--reps", str(args.reps)],
                                 env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{s:14s} copy {r['copy_GBps']:7.0f} GB/s  gather {r['gather_ms']:.3f} ms  "
                  f"matmul {r['matmul_TFLOPs']:.0f} TFLOP/s  ({r['tensors']} tensors, "
                  f"{r['bytes'] / 2**30:.2f} GiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
