#!/usr/bin/env python3
"""torch.compile(mode="reduce-overhead") inference of a GPT-2-small-sized
model (a transformers GPT2Config: 12 layers, width 768, 12 heads; random
weights) over varying batch sizes, so that CUDA-graph trees record a graph
per batch size and switch between them (checkpointing and restoring their
shared pool), under three allocators:

  torch-default     PyTorch's caching allocator
  torch-expandable  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  vmmalloc          vmmalloc.torch.install()

Each run is a fresh process; the systems alternate over --rounds rounds and
share one Inductor cache directory (compilation is not what is measured).
A run warms every batch size up (compiles, records), then times --steps
forward passes cycling through the batch sizes.

Fields per row: tokens_per_s (median over the rounds), tokens_per_s_runs,
peak_device_bytes (the allocator's peak reserved bytes: memory_stats'
reserved_bytes.all.peak, or vmmalloc's), graphs_recorded (CUDA-graph
captures, less the trees' one empty keep-alive graph), outputs_match
(the last step's logits checksum equals torch-default's). Targets (issue 20):
vmmalloc tokens/s >= 0.99x torch-default; its peak <= torch-expandable's.
Writes bench/results/torch_compile.json (../shared/BENCH.md format).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run_info import ROOT, write_results  # noqa: E402

SYSTEMS = ["torch-default", "torch-expandable", "vmmalloc"]
BATCHES = [1, 4, 8, 16, 2]
SEQ = 128


def worker(system: str, steps: int) -> dict:
    import torch
    if system == "vmmalloc":
        import vmmalloc.torch as vt
        vt.install()
    captures = [0]
    original = torch.cuda.CUDAGraph.capture_begin

    def counted(self, *args, **kwargs):
        captures[0] += 1
        return original(self, *args, **kwargs)

    torch.cuda.CUDAGraph.capture_begin = counted
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    model = GPT2LMHeadModel(cfg).cuda().eval().half()
    gen = torch.Generator().manual_seed(1)
    inputs = {b: torch.randint(0, cfg.vocab_size, (b, SEQ), generator=gen).cuda() for b in BATCHES}

    def forward(ids):
        return model(input_ids=ids).logits

    compiled = torch.compile(forward, mode="reduce-overhead", dynamic=False)
    with torch.no_grad():
        for _ in range(3):  # compile, record, then run each graph once more
            for b in BATCHES:
                compiled(inputs[b])
        torch.cuda.synchronize()
        tokens = 0
        t0 = time.perf_counter()
        for i in range(steps):
            b = BATCHES[i % len(BATCHES)]
            out = compiled(inputs[b])
            tokens += b * SEQ
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        checksum = float(out.float().sum().item())
    if system == "vmmalloc":
        peak = int(vt.memory_stats()["peak_reserved_bytes"])
    else:
        peak = int(torch.cuda.memory_stats()["reserved_bytes.all.peak"])
    return {"tokens_per_s": tokens / seconds, "peak_device_bytes": peak,
            "graphs_recorded": captures[0] - 1, "checksum": checksum,
            "backend": torch.cuda.get_allocator_backend()}


def run_worker(system: str, steps: int, cache_dir: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "python") + os.pathsep + env.get("PYTHONPATH", "")
    env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    if system == "torch-expandable":
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    out = subprocess.run([sys.executable, __file__, "--worker", system, "--steps", str(steps)],
                         env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "torch_compile.json"))
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.steps)), flush=True)
        return 0
    systems = [s for s in a.systems.split(",") if s]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        ap.error(f"--systems: unknown {bad}; choose from {', '.join(SYSTEMS)}")
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    with tempfile.TemporaryDirectory(prefix="vmm-inductor-") as cache:
        for r in range(a.rounds):
            for s in systems:
                res = run_worker(s, a.steps, cache)
                print(json.dumps({"round": r, "system": s, **res}), flush=True)
                runs[s].append(res)
    ref = runs.get("torch-default", [{}])[-1].get("checksum")
    rows = []
    for s in systems:
        tps = [x["tokens_per_s"] for x in runs[s]]
        rows.append({
            "system": s,
            "tokens_per_s": round(statistics.median(tps), 1),
            "tokens_per_s_runs": [round(x, 1) for x in tps],
            "peak_device_bytes": max(x["peak_device_bytes"] for x in runs[s]),
            "graphs_recorded": runs[s][-1]["graphs_recorded"],
            "outputs_match": ref is not None and runs[s][-1]["checksum"] == ref,
            "batch_sizes": BATCHES,
            "seq_len": SEQ,
            "steps": a.steps,
        })
    for row in rows:
        print(json.dumps(row), flush=True)
    write_results("torch_compile", rows, a.commit, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
