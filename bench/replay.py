#!/usr/bin/env python3
"""bench/replay: allocation traces replayed through every allocator, one run.

For every trace (default: bench/traces/*.trace[.gz]), each system replays it
in a process of its own, in this order:

  torch-default          bench/replay_torch.py, PYTORCH_CUDA_ALLOC_CONF unset
  torch-expandable       bench/replay_torch.py, expandable_segments:True
  torch-cudamallocasync  bench/replay_torch.py, backend:cudaMallocAsync
  vmmalloc               vmm_replay --backend cuda --json (tools/replay.cpp)

Each prints one JSON row (the replay fields of docs/benchmarks.md); this
script collects them, in the same run on the same card, into
bench/results/replay.json (docs/benchmarks.md's results format). The file is
written only if every system ran on every trace. `peak_physical_bytes` is, for every system, device memory in use
(cuMemGetInfo total - free, read on the driver, minus the reading after the
system's set-up), read after every event (vmm_replay also samples at 2 kHz);
`allocator_peak_bytes` is what the allocator says it held at most (torch:
max_memory_reserved; vmmalloc: the physical pool's peak_created_bytes).

Python standard library only here (the replayers need torch and the built
vmm_replay).

    cmake -S . -B build-gpu -DCMAKE_CUDA_ARCHITECTURES=90
    cmake --build build-gpu -j --target vmm_replay
    python3 bench/replay.py --vmm-replay build-gpu/tools/vmm_replay --commit "$(git rev-parse HEAD)"
    python3 bench/render_tables.py
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

from run_info import device_info, git_commit

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIELDS = ["system", "trace", "events", "peak_live_bytes", "peak_physical_bytes", "ratio",
          "driver_calls", "replay_s", "allocator_peak_bytes"]
TORCH_CONF = {
    "torch-default": None,
    "torch-expandable": "expandable_segments:True",
    "torch-cudamallocasync": "backend:cudaMallocAsync",
}
SYSTEMS = list(TORCH_CONF) + ["vmmalloc"]


def default_traces() -> list[pathlib.Path]:
    d = ROOT / "bench" / "traces"
    if not d.is_dir():
        return []
    return [p for p in sorted(d.iterdir()) if p.name.endswith((".trace", ".trace.gz"))]


def run_system(system: str, trace: pathlib.Path, args) -> dict:
    env = dict(os.environ)
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    env.pop("PYTORCH_NO_CUDA_MEMORY_CACHING", None)
    if system == "vmmalloc":
        cmd = [str(args.vmm_replay), "--backend", "cuda", "--device", str(args.device), "--json",
               "--system", system, str(trace)]
    else:
        if TORCH_CONF[system] is not None:
            env["PYTORCH_CUDA_ALLOC_CONF"] = TORCH_CONF[system]
        cmd = [args.python, str(ROOT / "bench" / "replay_torch.py"), "--system", system,
               "--device", str(args.device), str(trace)]
    print(f"replay: {system} on {trace.name}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, timeout=args.timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{system} on {trace}: exit status {p.returncode}")
    lines = [ln for ln in p.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{system} on {trace}: no JSON row in its output")
    row = json.loads(lines[-1])
    missing = [f for f in FIELDS if f not in row]
    if missing:
        raise RuntimeError(f"{system} on {trace}: row lacks {missing}")
    if row["system"] != system:
        raise RuntimeError(f"{system} on {trace}: row says system {row['system']!r}")
    out = {f: row[f] for f in FIELDS}
    print(f"replay: {system} on {out['trace']}: ratio {out['ratio']}, peak physical "
          f"{out['peak_physical_bytes'] / 2**30:.3f} GiB vs live {out['peak_live_bytes'] / 2**30:.3f} GiB, "
          f"driver calls {out['driver_calls']}, {out['replay_s']:.2f} s", file=sys.stderr, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", nargs="*", type=pathlib.Path, default=None,
                    help="trace files (default: bench/traces)")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)")
    ap.add_argument("--vmm-replay", type=pathlib.Path, default=ROOT / "build-gpu" / "tools" / "vmm_replay")
    ap.add_argument("--python", default=sys.executable, help="python with torch for the torch replayers")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results" / "replay.json")
    ap.add_argument("--commit", default=None, help="commit the run was built from (default: git rev-parse HEAD)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per system and trace")
    args = ap.parse_args()

    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        ap.error(f"unknown systems {unknown}; choose from {SYSTEMS}")
    traces = args.traces if args.traces is not None else default_traces()
    if not traces:
        ap.error("no traces found")
    if "vmmalloc" in systems and not args.vmm_replay.is_file():
        ap.error(f"{args.vmm_replay} does not exist: build the vmm_replay target (or --vmm-replay)")

    device, driver = device_info()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = []
    try:
        for trace in traces:
            for system in systems:
                rows.append(run_system(system, trace, args))
    except (RuntimeError, OSError, subprocess.SubprocessError, json.JSONDecodeError) as e:
        print(f"replay: {e}; no results written", file=sys.stderr)
        return 1

    command = "python3 bench/replay.py " + shlex.join(sys.argv[1:])
    doc = {
        "bench": "replay",
        "commit": args.commit or git_commit(),
        "device": device,
        "driver": driver,
        "date": started,
        "command": command.strip(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"replay: wrote {args.out} ({len(rows)} rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
