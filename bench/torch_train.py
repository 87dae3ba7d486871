#!/usr/bin/env python3
"""bench/torch_train: GPT-2-small training with variable batch and sequence
length, per allocator, one run.

A GPT-2-small-sized model (transformers' GPT2Config defaults: 12 layers,
768 wide, 124M parameters; random initialisation, nothing downloaded) is
trained with AdamW under bf16 autocast on a fixed, seeded schedule of
(batch, sequence length) pairs - batch 2..16, sequence 64..1024 tokens - the
workload whose changing shapes fragment a caching allocator. Systems:

  torch-default     PyTorch's caching allocator, default settings
  torch-expandable  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  vmmalloc          vmmalloc.torch.install()

(bench/preload.py runs the same workload for torch-default, torch-nocache -
PYTORCH_NO_CUDA_MEMORY_CACHING=1 - and vmmalloc-preload, the same under
LD_PRELOAD=libvmmalloc_preload.so.)

Attention uses PyTorch's flash / memory-efficient kernels, cuDNN's off
(attention_backends(): its per-shape plan building otherwise dominates).

Every run is a process of its own; the systems' runs alternate (A B C A B C
...), --runs of each (default 5). In a run: the memory sampler starts
(bench/device_memory.py, --sample-hz, default 2 kHz), CUDA and cuBLAS are
set up and the baseline read,
the model is built on the GPU, --warmup steps run (not timed), then --steps
timed steps. tokens_per_s = tokens (batch x sequence, summed) of the timed
steps / their time; peak_device_bytes = device memory in use at most during
the run (sampler, and a reading after every step) minus the baseline.

The row (docs/benchmarks.md, torch_train): system, tokens_per_s (the median
run), tokens_per_s_runs (every run, in order), peak_device_bytes (the largest
of the runs).

    PYTHONPATH=python python3 bench/torch_train.py --commit "$(git rev-parse HEAD)"

writes bench/results/torch_train.json once every run has finished.
--step-times prints each timed step's GPU and host time and vmmalloc's
counters over the timed steps; --vmmalloc-conf sets VMMALLOC_CONF for the
vmmalloc runs (for trying settings); both need --out, so that probes never
replace the benchmark's results file. Needs
PyTorch with CUDA and transformers; vmmalloc's runs need its Python package.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import random
import shlex
import statistics
import subprocess
import sys
import time

from device_memory import DEFAULT_HZ
from run_info import device_info, git_commit

ROOT = pathlib.Path(__file__).resolve().parent.parent
GIB = 1 << 30
FIELDS = ["system", "tokens_per_s", "tokens_per_s_runs", "peak_device_bytes"]
TORCH_CONF = {
    "torch-default": None,
    "torch-expandable": "expandable_segments:True",
    "vmmalloc": None,
    # bench/preload.py's systems: PyTorch's cache off (every tensor a
    # cudaMalloc / cudaFree), without and with the LD_PRELOAD interposer.
    "torch-nocache": None,
    "vmmalloc-preload": None,
}
SYSTEMS = list(TORCH_CONF)
# Per benchmark: the systems it runs by default and its results file.
BENCHES = {
    "torch_train": ["torch-default", "torch-expandable", "vmmalloc"],
    "preload": ["torch-default", "torch-nocache", "vmmalloc-preload"],
}
PRELOAD_LIB = ROOT / "build-gpu" / "preload" / "libvmmalloc_preload.so"
VOCAB = 50257  # GPT2Config's default vocabulary


def schedule(steps: int, seed: int) -> list[tuple[int, int]]:
    """The (batch, sequence length) of each step: the same for every system."""
    rng = random.Random(seed)
    return [(rng.randint(2, 16), 64 * rng.randint(1, 16)) for _ in range(steps)]


def attention_backends() -> None:
    """The attention kernels every system's runs use: flash / memory-efficient
    SDPA, not cuDNN's. cuDNN's attention builds an execution plan for every
    new (batch, sequence) shape, several ms of host time per layer call; with
    this schedule's mostly unseen shapes that plan building was most of each
    step (measured on an H200: ~200 ms for a step of 128 tokens as for one of
    10k, run-to-run spread +-10%), which hid everything else, the allocator
    included."""
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)


def training_step(model, opt, gen, dev):
    """One step of the workload (random tokens of the given shape, bf16
    autocast, backward, AdamW) on `model` (a GPT2LMHeadModel, or one wrapped
    in DistributedDataParallel: bench/ddp_train.py); returns the loss."""
    import torch

    def step(batch: int, seq: int) -> torch.Tensor:
        ids = torch.randint(0, VOCAB, (batch, seq), device=dev, generator=gen)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


# ------------------------------------------------------------------ worker


def counters(system: str, device: int) -> dict[str, int]:
    """vmmalloc's driver-facing counters (vmmalloc runs only; else empty)."""
    if system != "vmmalloc":
        return {}
    import vmmalloc.torch as vt

    st = vt.memory_stats(device)
    return {k: st[k] for k in ("allocations", "stitches", "chunk_creates", "chunk_releases",
                               "fenced_free_waits")}


def worker(system: str, warmup: int, steps: int, seed: int, device: int, sample_hz: float,
           step_times: bool = False) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from device_memory import DeviceMemory, Sampler

    sampler = Sampler(device, sample_hz)
    sampler.start()
    import torch

    if system == "vmmalloc":
        import vmmalloc.torch as vt

        vt.install()
    torch.cuda.set_device(device)
    attention_backends()
    dev = torch.device("cuda", device)
    meter = DeviceMemory(device)
    # Context and cuBLAS up before the baseline.
    torch.cuda.init()
    torch.cuda.current_blas_handle()
    torch.cuda.synchronize()
    baseline = meter.used()

    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(use_cache=False)
    with torch.device(dev):
        model = GPT2LMHeadModel(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    plan = schedule(warmup + steps, seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    peak = meter.used()

    step = training_step(model, opt, gen, dev)

    for batch, seq in plan[:warmup]:
        step(batch, seq)
        peak = max(peak, meter.used())
    torch.cuda.synchronize()
    before = counters(system, device)
    tokens = 0
    losses = []
    marks = []
    t0 = time.perf_counter()
    for batch, seq in plan[warmup:]:
        if step_times:
            marks.append((torch.cuda.Event(enable_timing=True), time.perf_counter()))
            marks[-1][0].record()
        losses.append(step(batch, seq))
        tokens += batch * seq
        peak = max(peak, meter.used())
    if step_times:
        marks.append((torch.cuda.Event(enable_timing=True), time.perf_counter()))
        marks[-1][0].record()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    after = counters(system, device)
    if before:
        print(f"torch_train: {system}: counters over the timed steps: "
              + ", ".join(f"{k} +{after[k] - before[k]}" for k in before), file=sys.stderr, flush=True)
    if step_times:
        for i, (batch, seq) in enumerate(plan[warmup:]):
            gpu_ms = marks[i][0].elapsed_time(marks[i + 1][0])
            host_ms = (marks[i + 1][1] - marks[i][1]) * 1e3
            print(f"torch_train: {system}: step {i} batch {batch} seq {seq}: gpu {gpu_ms:.2f} ms, "
                  f"host {host_ms:.2f} ms", file=sys.stderr, flush=True)
    peak = max(peak, meter.used())
    sampled_peak, samples, seconds = sampler.stop()
    peak = max(peak, sampled_peak)
    final_loss = float(losses[-1])
    if final_loss != final_loss:
        raise SystemExit(f"torch_train: {system}: the loss is NaN")
    allocator_peak = torch.cuda.max_memory_reserved(dev)
    if system == "vmmalloc":
        import vmmalloc.torch as vt

        st = vt.memory_stats(device)
        print(f"torch_train: vmmalloc counters: allocations {st['allocations']}, stitches "
              f"{st['stitches']}, chunks created {st['chunk_creates']}, released "
              f"{st['chunk_releases']}, reserved {st['reserved_bytes']}", file=sys.stderr, flush=True)
    out = {
        "system": system,
        "tokens_per_s": tokens / elapsed,
        "peak_device_bytes": peak - baseline,
        "allocator_peak_bytes": allocator_peak,
        "tokens": tokens,
        "seconds": elapsed,
    }
    print(f"torch_train: {system}: {tokens} tokens in {elapsed:.3f} s = {tokens / elapsed:,.0f} tokens/s; "
          f"peak {out['peak_device_bytes'] / GIB:.3f} GiB over a baseline of {baseline / GIB:.3f} GiB "
          f"(allocator says {allocator_peak / GIB:.3f} GiB); final loss {final_loss:.3f}; sampler "
          f"{samples / max(seconds, 1e-9):.0f} Hz", file=sys.stderr, flush=True)
    return out


# ------------------------------------------------------------------ driver


def system_env(system: str, preload_lib: pathlib.Path = PRELOAD_LIB) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    env.pop("PYTORCH_NO_CUDA_MEMORY_CACHING", None)
    env.pop("LD_PRELOAD", None)
    if TORCH_CONF[system]:
        env["PYTORCH_CUDA_ALLOC_CONF"] = TORCH_CONF[system]
    if system in ("torch-nocache", "vmmalloc-preload"):
        env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
    if system == "vmmalloc-preload":
        env["LD_PRELOAD"] = str(preload_lib)
        env["VMMALLOC_CONF"] = "print_stats:on"  # its summary on stderr: the allocations went through it
    path = str(ROOT / "python")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def main(bench: str = "torch_train", description: str | None = None) -> int:
    ap = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per system, alternating (>= 3)")
    ap.add_argument("--warmup", type=int, default=6, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=60, help="timed steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--systems", default=",".join(BENCHES[bench]), help="comma-separated subset")
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    ap.add_argument("--commit", default=None, help="git sha the tree was built from (default: git)")
    default_out = str(ROOT / "bench" / "results" / f"{bench}.json")
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--preload-lib", type=pathlib.Path, default=PRELOAD_LIB,
                    help="libvmmalloc_preload.so for vmmalloc-preload")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run")
    ap.add_argument("--sample-hz", type=float, default=DEFAULT_HZ,
                    help="memory sampler readings per second (0: as fast as it goes; default %(default)s)")
    ap.add_argument("--step-times", action="store_true",
                    help="print each timed step's GPU time (events between steps) and host time")
    ap.add_argument("--vmmalloc-conf", default=None,
                    help="VMMALLOC_CONF for the vmmalloc and vmmalloc-preload runs (trying settings)")
    args = ap.parse_args()
    if args.runs < 3:
        ap.error("--runs must be at least 3 (docs/benchmarks.md: the median of at least 3 runs)")
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be >= 1")
    if (args.step_times or args.vmmalloc_conf) and args.out == default_out and not args.worker:
        ap.error("--step-times and --vmmalloc-conf are for probes: give --out (the results file "
                 "holds the benchmark as defined)")

    if args.worker:
        print(json.dumps(worker(args.worker, args.warmup, args.steps, args.seed, args.device,
                                args.sample_hz, args.step_times)), flush=True)
        return 0

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        ap.error(f"--systems: unknown {unknown}; choose from {', '.join(SYSTEMS)}")
    if "vmmalloc-preload" in systems and not args.preload_lib.is_file():
        ap.error(f"--preload-lib: {args.preload_lib} does not exist (build the vmmalloc_preload target)")
    if "vmmalloc" in systems:
        subprocess.run([sys.executable, "-c", "import vmmalloc._extension as e; e.load()"],
                       env=system_env("vmmalloc"), check=True)
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for r in range(args.runs):
        for s in systems:
            cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", s,
                   "--warmup", str(args.warmup), "--steps", str(args.steps), "--seed", str(args.seed),
                   "--device", str(args.device), "--sample-hz", str(args.sample_hz)]
            if args.step_times:
                cmd.append("--step-times")
            env = system_env(s, args.preload_lib)
            if args.vmmalloc_conf and s in ("vmmalloc", "vmmalloc-preload"):
                env["VMMALLOC_CONF"] = ",".join(c for c in (env.get("VMMALLOC_CONF"), args.vmmalloc_conf) if c)
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=args.timeout)
            sys.stderr.write(proc.stderr)
            if proc.returncode != 0:
                raise SystemExit(f"{bench}: {s} run {r + 1} failed (exit {proc.returncode})")
            if s == "vmmalloc-preload" and "served_allocations=" not in proc.stderr:
                raise SystemExit(f"{bench}: {s} run {r + 1}: no interposer summary on stderr "
                                 "(was libvmmalloc_preload.so loaded?)")
            runs[s].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = []
    for s in systems:
        tps = [x["tokens_per_s"] for x in runs[s]]
        rows.append({
            "system": s,
            "tokens_per_s": round(statistics.median(tps)),
            "tokens_per_s_runs": [round(x) for x in tps],
            "peak_device_bytes": max(x["peak_device_bytes"] for x in runs[s]),
        })
    device, driver = device_info()
    doc = {
        "bench": bench,
        "commit": args.commit or git_commit(),
        "device": device,
        "driver": driver,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": f"python3 bench/{pathlib.Path(sys.argv[0]).name} "
                   + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "rows": rows,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{bench}: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
