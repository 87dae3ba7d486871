#!/usr/bin/env python3
"""bench/ddp_train: GPT-2-small training under PyTorch DDP on 2 GPUs (NCCL),
per allocator, one run.

The workload of bench/torch_train.py (GPT-2-small, AdamW, bf16 autocast, the
same seeded schedule of batch 2..16 x sequence 64..1024, --warmup untimed
steps then --steps timed ones) on every rank, wrapped in
DistributedDataParallel, launched with `python -m torch.distributed.run
--standalone --nproc_per_node=N`. Systems (their environments as in
torch_train): torch-default, torch-expandable, vmmalloc
(vmmalloc.torch.install() on every rank before CUDA is used). Each rank
draws its own tokens (seed + rank).

Per rank: the memory sampler of its GPU starts (bench/device_memory.py),
CUDA, cuBLAS and the NCCL communicator are set up (one all_reduce) and the
baseline read, so NCCL's own buffers are outside every system's figure;
peak_device_bytes = that GPU's device memory in use at most during the run
minus the baseline. Runs alternate (A B C A B C ...), --runs of each.

The row (docs/benchmarks.md, "Results files"): system, world_size (ranks),
tokens_per_s (all ranks' tokens per second, the median run),
tokens_per_s_runs, peak_device_bytes_max_rank (the largest rank's peak, the
largest run), and peak_device_bytes_per_rank (each rank's largest).

    PYTHONPATH=python python3 bench/ddp_train.py --commit "$(git rev-parse HEAD)"

writes bench/results/ddp_train.json once every run has finished. Target
(docs/benchmarks.md, checked by render_tables.py): vmmalloc at least 0.98x
torch-default's tokens/s, its peak at most torch-expandable's. Needs 2 GPUs
(--nproc), PyTorch with NCCL and transformers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from run_info import device_info, git_commit
from torch_train import attention_backends, schedule, system_env, training_step

ROOT = pathlib.Path(__file__).resolve().parent.parent
GIB = 1 << 30
SYSTEMS = ["torch-default", "torch-expandable", "vmmalloc"]


# ------------------------------------------------------------------ worker (one rank)


def worker(system: str, warmup: int, steps: int, seed: int, result_dir: pathlib.Path) -> None:
    rank = int(os.environ["LOCAL_RANK"])
    sys.path.insert(0, str(ROOT / "bench"))
    from device_memory import DeviceMemory, Sampler

    sampler = Sampler(rank)
    sampler.start()
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if system == "vmmalloc":
        import vmmalloc.torch as vt

        vt.install()
    torch.cuda.set_device(rank)
    attention_backends()
    dev = torch.device("cuda", rank)
    meter = DeviceMemory(rank)
    torch.cuda.init()
    torch.cuda.current_blas_handle()
    dist.init_process_group("nccl", device_id=dev)
    probe = torch.ones(1024, device=dev)
    dist.all_reduce(probe)  # the communicator and NCCL's buffers exist from here
    torch.cuda.synchronize()
    if float(probe[0]) != dist.get_world_size():
        raise SystemExit(f"ddp_train: rank {rank}: all_reduce gave {float(probe[0])}")
    del probe
    baseline = meter.used()

    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)  # the same initial weights on every rank
    with torch.device(dev):
        model = GPT2LMHeadModel(GPT2Config(use_cache=False))
    model.train()
    ddp = DistributedDataParallel(model, device_ids=[rank])
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
    plan = schedule(warmup + steps, seed)
    gen = torch.Generator(device=dev).manual_seed(seed + rank)
    peak = meter.used()

    step = training_step(ddp, opt, gen, dev)

    for batch, seq in plan[:warmup]:
        step(batch, seq)
        peak = max(peak, meter.used())
    torch.cuda.synchronize()
    dist.barrier()
    tokens = 0
    losses = []
    t0 = time.perf_counter()
    for batch, seq in plan[warmup:]:
        losses.append(step(batch, seq))
        tokens += batch * seq
        peak = max(peak, meter.used())
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = max(peak, meter.used())
    sampled_peak, samples, seconds = sampler.stop()
    peak = max(peak, sampled_peak)
    final_loss = float(losses[-1])
    if final_loss != final_loss:
        raise SystemExit(f"ddp_train: {system}: rank {rank}: the loss is NaN")
    out = {"rank": rank, "tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed,
           "peak_device_bytes": peak - baseline, "final_loss": final_loss}
    print(f"ddp_train: {system}: rank {rank}: {tokens} tokens in {elapsed:.3f} s = "
          f"{tokens / elapsed:,.0f} tokens/s; peak {out['peak_device_bytes'] / GIB:.3f} GiB over a "
          f"baseline of {baseline / GIB:.3f} GiB; final loss {final_loss:.3f}; sampler "
          f"{samples / max(seconds, 1e-9):.0f} Hz", file=sys.stderr, flush=True)
    (result_dir / f"rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


# ------------------------------------------------------------------ driver


def run_once(system: str, args, nproc: int) -> dict:
    """One torchrun of `system`; the ranks' figures combined."""
    with tempfile.TemporaryDirectory(prefix="ddp_train.") as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", str(pathlib.Path(__file__).resolve()),
               "--worker", system, "--result-dir", tmp, "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--seed", str(args.seed)]
        proc = subprocess.run(cmd, env=system_env(system), timeout=args.timeout)
        if proc.returncode != 0:
            raise SystemExit(f"ddp_train: {system} failed (exit {proc.returncode})")
        ranks = [json.loads((pathlib.Path(tmp) / f"rank{r}.json").read_text()) for r in range(nproc)]
    # All ranks run the same steps in lockstep: tokens of all over the slowest's time.
    return {"tokens_per_s": sum(r["tokens"] for r in ranks) / max(r["seconds"] for r in ranks),
            "peak_per_rank": [r["peak_device_bytes"] for r in ranks]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per system, alternating (>= 3)")
    ap.add_argument("--nproc", type=int, default=2, help="ranks (GPUs)")
    ap.add_argument("--warmup", type=int, default=6)
    ap.add_argument("--steps", type=int, default=60, help="timed steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    ap.add_argument("--result-dir", type=pathlib.Path, help=argparse.SUPPRESS)
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ddp_train.json"))
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    args = ap.parse_args()

    if args.worker:
        worker(args.worker, args.warmup, args.steps, args.seed, args.result_dir)
        return 0
    if args.runs < 3:
        ap.error("--runs must be at least 3 (docs/benchmarks.md: the median of at least 3 runs)")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not systems or any(s not in SYSTEMS for s in systems):
        ap.error(f"--systems: choose from {', '.join(SYSTEMS)}")
    if "vmmalloc" in systems:  # build the adapter once, not in every rank at once
        subprocess.run([sys.executable, "-c", "import vmmalloc._extension as e; e.load()"],
                       env=system_env("vmmalloc"), check=True)
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for _ in range(args.runs):
        for s in systems:
            runs[s].append(run_once(s, args, args.nproc))
    rows = []
    for s in systems:
        tps = [r["tokens_per_s"] for r in runs[s]]
        per_rank = [max(r["peak_per_rank"][k] for r in runs[s]) for k in range(args.nproc)]
        rows.append({"system": s, "world_size": args.nproc,
                     "tokens_per_s": round(statistics.median(tps)),
                     "tokens_per_s_runs": [round(x) for x in tps],
                     "peak_device_bytes_max_rank": max(per_rank),
                     "peak_device_bytes_per_rank": per_rank})
    device, driver = device_info()
    doc = {
        "bench": "ddp_train",
        "commit": args.commit or git_commit(),
        "device": f"{args.nproc} x {device}" if device else None,
        "driver": driver,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python3 bench/ddp_train.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "rows": rows,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"ddp_train: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
