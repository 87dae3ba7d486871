#!/usr/bin/env python3
"""bench/torch_workspace: a workspace grown 0.5 -> 5 GiB under PyTorch, one run.

vLLM's MoE workspace problem (bench/workspace_growth) measured on PyTorch: a
buffer grown 0.5 -> 1 -> 2 -> 3 -> 4 -> 5 GiB (--sizes) with 50 ms of GPU
work (--work-ms) queued on the stream before each resize. Each system runs
in a process of its own, one after the other on the same card:

  torch-default          del + torch.empty (PyTorch's caching allocator)
  torch-empty-cache      del + torch.cuda.empty_cache() + torch.empty (vLLM's fix)
  torch-expandable       del + torch.empty, expandable_segments:True
  torch-cudamallocasync  del + torch.empty, backend:cudaMallocAsync
  vmmalloc               del + torch.empty with vmmalloc.torch.install()
  vmmalloc-workspace     vmmalloc.torch.Workspace.grow + .tensor (in place)

Per system (a worker process, `--worker SYSTEM`): the memory sampler starts
(bench/device_memory.py, its own process), PyTorch and the system are set up,
the baseline is read; the first size is allocated and filled (set-up, not a
resize); then for each later size the stream is drained, the work is queued
(a kernel writing the buffer's first byte, a 50 ms spin, the same write
again), an event is recorded after it, the resize is timed on the host, the
event is queried (completed: the resize waited for the queued work), device
memory is read, and the new buffer is filled. The torch_workspace row
(docs/benchmarks.md): system, final_bytes, peak_device_bytes (sampler and
readings after each operation, minus the baseline), resize_ms,
max_resize_ms, waited_for_queue, address_stable.

    PYTHONPATH=python python3 bench/torch_workspace.py --commit "$(git rev-parse HEAD)"
    python3 bench/render_tables.py

writes bench/results/torch_workspace.json (docs/benchmarks.md's results
format) once every system has run. Needs PyTorch with CUDA; vmmalloc's rows need its Python
package (python/, built on first use).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

from device_memory import DEFAULT_HZ
from run_info import device_info, git_commit

ROOT = pathlib.Path(__file__).resolve().parent.parent
GIB = 1 << 30
FIELDS = ["system", "final_bytes", "peak_device_bytes", "resize_ms", "max_resize_ms",
          "waited_for_queue", "address_stable"]
TORCH_CONF = {
    "torch-default": None,
    "torch-empty-cache": None,
    "torch-expandable": "expandable_segments:True",
    "torch-cudamallocasync": "backend:cudaMallocAsync",
    "vmmalloc": None,
    "vmmalloc-workspace": None,
}
SYSTEMS = list(TORCH_CONF)


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        try:
            gib = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--sizes: {part!r} is not a number of GiB") from None
        if gib <= 0:
            raise argparse.ArgumentTypeError(f"--sizes: {part!r} must be > 0")
        sizes.append(int(gib * GIB))
    if len(sizes) < 2 or sizes != sorted(sizes) or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError("--sizes: at least two sizes, strictly increasing")
    return sizes


# ------------------------------------------------------------------ worker


def worker(system: str, sizes: list[int], work_ms: float, device: int, sample_hz: float) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from device_memory import DeviceMemory, Sampler

    sampler = Sampler(device, sample_hz)
    sampler.start()
    import torch

    if system == "vmmalloc":
        import vmmalloc.torch as vt

        vt.install()
    torch.cuda.set_device(device)
    dev = torch.device("cuda", device)
    stream = torch.cuda.current_stream(dev)
    meter = DeviceMemory(device)

    # Set-up: the spin kernel calibrated, events and the vmmalloc workspace
    # (address space only) made, everything drained.
    cycles = 20_000_000
    t_start, t_end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(cycles)
    t_start.record()
    torch.cuda._sleep(cycles)
    t_end.record()
    t_end.synchronize()
    spin_cycles = int(work_ms * cycles / t_start.elapsed_time(t_end))
    workspace = None
    if system == "vmmalloc-workspace":
        import vmmalloc.torch as vt

        workspace = vt.Workspace(2 * sizes[-1], device, name="torch_workspace bench")
    probe = torch.zeros(1, device=dev)  # a small fixed buffer of the benchmark
    torch.cuda.synchronize()
    baseline = meter.used()
    peak = baseline

    held = [None]  # the buffer's only reference, so that the del below frees it
    # vmmalloc-workspace: each resize's parts, timed where they run (printed):
    # grow(), dropping the old view, tensor().
    parts_ms = {"grow": [], "drop": [], "tensor": []}

    def resize(n):
        if system == "vmmalloc-workspace":
            t0 = time.perf_counter()
            workspace.grow(n)
            t1 = time.perf_counter()
            held[0] = None
            t2 = time.perf_counter()
            held[0] = workspace.tensor((n,), torch.uint8)
            t3 = time.perf_counter()
            for part, ms in zip(parts_ms.values(), (t1 - t0, t2 - t1, t3 - t2)):
                part.append(ms * 1e3)
            return
        held[0] = None  # del: the old buffer is freed before the new one is made
        if system == "torch-empty-cache":
            torch.cuda.empty_cache()
        held[0] = torch.empty(n, dtype=torch.uint8, device=dev)

    t0 = time.perf_counter()
    resize(sizes[0])
    buf = held[0]
    first_ms = (time.perf_counter() - t0) * 1e3
    buf.fill_(1)
    torch.cuda.synchronize()
    peak = max(peak, meter.used())
    addresses = {buf.data_ptr()}
    resize_ms, waited = [], []
    measured_work_ms = []
    for n in sizes[1:]:
        torch.cuda.synchronize()
        begin = torch.cuda.Event(enable_timing=True)
        queued = torch.cuda.Event(enable_timing=True)
        begin.record(stream)
        buf[:1].add_(1)              # the work uses the buffer ...
        torch.cuda._sleep(spin_cycles)
        buf[:1].add_(1)              # ... before and after the spin
        queued.record(stream)
        del buf
        t0 = time.perf_counter()
        resize(n)
        resize_ms.append((time.perf_counter() - t0) * 1e3)
        buf = held[0]
        waited.append(bool(queued.query()))
        peak = max(peak, meter.used())
        addresses.add(buf.data_ptr())
        buf.fill_(1)                 # the new buffer is written whole
        queued.synchronize()
        measured_work_ms.append(begin.elapsed_time(queued))
        peak = max(peak, meter.used())
    torch.cuda.synchronize()
    peak = max(peak, meter.used())
    sampled_peak, samples, seconds = sampler.stop()
    peak = max(peak, sampled_peak)
    del probe
    row = {
        "system": system,
        "final_bytes": sizes[-1],
        "peak_device_bytes": peak - baseline,
        "resize_ms": [round(x, 4) for x in resize_ms],
        "max_resize_ms": round(max(resize_ms), 4),
        "waited_for_queue": any(waited),
        "address_stable": len(addresses) == 1,
    }
    if parts_ms["grow"]:
        # .tensor() again alone (no grow, no queued work), for the print.
        def median_us(fn, reps=200):
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e6)
            return sorted(times)[reps // 2]

        n = sizes[-1]
        tensor_us = median_us(lambda: workspace.tensor((n,), torch.uint8))
        print(f"torch_workspace: {system}: of which "
              + "; ".join(f"{name} {', '.join(f'{x:.3f}' for x in ms[1:])}"
                          for name, ms in parts_ms.items())
              + f" ms; Workspace.tensor alone afterwards {tensor_us:.1f} us (median of 200)",
              file=sys.stderr, flush=True)
    print(f"torch_workspace: {system}: first allocation {first_ms:.3f} ms; resizes "
          f"{', '.join(f'{x:.3f}' for x in resize_ms)} ms; waited {waited}; queued work measured "
          f"{', '.join(f'{x:.1f}' for x in measured_work_ms)} ms; peak "
          f"{row['peak_device_bytes'] / GIB:.3f} GiB over a baseline of {baseline / GIB:.3f} GiB; "
          f"sampler {samples} readings in {seconds:.2f} s ({samples / max(seconds, 1e-9):.0f} Hz)",
          file=sys.stderr, flush=True)
    return row


# ------------------------------------------------------------------ driver


def system_env(system: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    env.pop("PYTORCH_NO_CUDA_MEMORY_CACHING", None)
    if TORCH_CONF[system]:
        env["PYTORCH_CUDA_ALLOC_CONF"] = TORCH_CONF[system]
    path = str(ROOT / "python")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_system(system: str, args) -> dict:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", system,
           "--sizes", args.sizes_text, "--work-ms", str(args.work_ms), "--device", str(args.device),
           "--sample-hz", str(args.sample_hz)]
    proc = subprocess.run(cmd, env=system_env(system), stdout=subprocess.PIPE, text=True,
                          timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"torch_workspace: {system} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.5,1,2,3,4,5", help="GiB, comma-separated (default %(default)s)")
    ap.add_argument("--work-ms", type=float, default=50.0, help="GPU work queued before each resize")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset, in this order")
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    ap.add_argument("--commit", default=None, help="git sha the tree was built from (default: git)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "torch_workspace.json"))
    ap.add_argument("--timeout", type=float, default=600, help="seconds per system")
    ap.add_argument("--sample-hz", type=float, default=DEFAULT_HZ,
                    help="memory sampler readings per second (0: as fast as it goes; default %(default)s)")
    args = ap.parse_args()
    args.sizes_text = args.sizes
    try:
        sizes = parse_sizes(args.sizes)
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    if args.work_ms <= 0:
        ap.error("--work-ms must be > 0")

    if args.worker:
        print(json.dumps(worker(args.worker, sizes, args.work_ms, args.device, args.sample_hz)), flush=True)
        return 0

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        ap.error(f"--systems: unknown {unknown}; choose from {', '.join(SYSTEMS)}")
    if any(s.startswith("vmmalloc") for s in systems):
        # Build (or find) the adapter first, outside any timed run.
        subprocess.run([sys.executable, "-c", "import vmmalloc._extension as e; e.load()"],
                       env=system_env("vmmalloc"), check=True)
    rows = [run_system(s, args) for s in systems]
    device, driver = device_info()
    doc = {
        "bench": "torch_workspace",
        "commit": args.commit or git_commit(),
        "device": device,
        "driver": driver,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python3 bench/torch_workspace.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "rows": [{k: r[k] for k in FIELDS} for r in rows],
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"torch_workspace: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
