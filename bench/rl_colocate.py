#!/usr/bin/env python3
"""Colocated training and generation on one GPU with sleep and wake
(examples/rl_colocate.py, docs/sleep.md): the example runs twice in fresh
processes, once with each idle phase asleep ("vmmalloc-sleep") and once with
both resident ("resident", the reference), and the two are compared.

Fields per row: peak_device_bytes (the allocator's peak mapped bytes over the
run), phase_peak_bytes (train, gen), switch_s (median and max of the phase
changes from the second iteration on; the first ones pin each tag's host
buffer and are reported apart as first_switch_s), graph_captures, and for the sleeping row
same_losses / same_tokens (identical to the reference). Targets (issue 22):
peak <= the larger phase's peak + 10%, graph_captures = 1, identical losses
and tokens. Writes bench/results/rl_colocate.json (../shared/BENCH.md format).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run_info import ROOT, write_results  # noqa: E402

EXAMPLE = ROOT / "examples" / "rl_colocate.py"


def run(args: list[str]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "python") + os.pathsep + env.get("PYTHONPATH", "")
    env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # deterministic cuBLAS
    out = subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def row(system: str, r: dict, ref: dict | None) -> dict:
    switches = r["switch_s"]
    # Setup's switch and the first iteration's three pin each tag's host
    # buffer once (kept from then on: wake(keep_host=True)).
    steady = switches[4:] if len(switches) > 4 else switches
    out = {
        "system": system,
        "size": r["size"],
        "iterations": r["iterations"],
        "peak_device_bytes": r["peak_device_bytes"],
        "phase_peak_bytes": r["phase_peak_bytes"],
        "sum_of_phase_peaks": sum(r["phase_peak_bytes"].values()),
        "larger_phase_peak": max(r["phase_peak_bytes"].values()),
        "switch_s": round(statistics.median(steady), 4) if steady else None,
        "switch_s_max": round(max(steady), 4) if steady else None,
        "first_switch_s": switches[:4],
        "graph_captures": r["graph_captures"],
        "graph_recaptures": r["graph_captures"] - 1,
        "losses": r["losses"],
    }
    if ref is not None:
        out["same_losses"] = r["losses"] == ref["losses"]
        out["same_tokens"] = r["tokens"] == ref["tokens"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="bench", choices=["small", "bench"])
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "rl_colocate.json"))
    a = ap.parse_args()
    common = ["--size", a.size, "--iterations", str(a.iterations)]
    resident = run(common + ["--no-sleep"])
    slept = run(common)
    rows = [row("resident", resident, None), row("vmmalloc-sleep", slept, resident)]
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "losses"}), flush=True)
    write_results("rl_colocate", rows, a.commit, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
