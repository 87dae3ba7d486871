#!/usr/bin/env python3
"""Where one training step of bench/torch_train.py spends its time, on the
GPU machine (a diagnostic; writes nothing to bench/results).

Prints: the card's bf16 matmul rate and kernel-launch cost (is the GPU or
the host the limit?), then runs the workload's steps for one system (no
memory sampler, no per-step memory reading) under cProfile and prints the
functions with the most cumulative and own time.

    PYTHONPATH=python python3 bench/diagnostics/step_profile.py [--system vmmalloc] [--steps 10]
"""

from __future__ import annotations

import argparse
import cProfile
import pathlib
import pstats
import sys
import time

# The workload is bench/torch_train.py's, one directory up.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from torch_train import attention_backends, schedule, training_step  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", default="torch-default", choices=["torch-default", "vmmalloc"])
    ap.add_argument("--warmup", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--cudnn-sdp", action="store_true",
                    help="keep cuDNN attention on (the benchmarks turn it off: attention_backends)")
    args = ap.parse_args()
    import torch

    if args.system == "vmmalloc":
        import vmmalloc.torch as vt

        vt.install()
    if not args.cudnn_sdp:
        attention_backends()
    dev = torch.device("cuda", 0)
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    torch.cuda.synchronize()
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"matmul bf16 8192^3: {20 * 2 * 8192 ** 3 / dt / 1e12:.0f} TFLOP/s")
    x = torch.zeros(1, device=dev)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10000):
        x.add_(1)
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    print(f"10000 tiny kernels: {(t1 - t0) * 1e6 / 10000:.1f} us each to launch, "
          f"{(t2 - t0) * 1e6 / 10000:.1f} us each to finish")
    del a, x

    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    with torch.device(dev):
        model = GPT2LMHeadModel(GPT2Config(use_cache=False))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    plan = schedule(args.warmup + args.steps, 0)
    gen = torch.Generator(device=dev).manual_seed(0)
    step = training_step(model, opt, gen, dev)
    for b, s in plan[:args.warmup]:
        step(b, s)
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    tokens = 0
    for b, s in plan[args.warmup:]:
        step(b, s)
        tokens += b * s
    torch.cuda.synchronize()
    prof.disable()
    dt = time.perf_counter() - t0
    print(f"{args.system}: {args.steps} steps, {tokens} tokens in {dt:.3f} s = {tokens / dt:,.0f} tokens/s "
          "(under cProfile)")
    st = pstats.Stats(prof)
    st.sort_stats("cumulative").print_stats(args.top)
    st.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
