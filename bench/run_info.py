"""What a benchmark's results file records about the run: the card and
driver (nvidia-smi) and the commit (git). Shared by bench/replay.py,
bench/torch_train.py (and bench/preload.py) and bench/torch_workspace.py;
write_results() writes a whole results file (bench/sleep_wake.py,
bench/rl_colocate.py). Python standard library only."""

from __future__ import annotations

import datetime
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def device_info() -> tuple[str | None, str | None]:
    """(name, driver version) of GPU 0, or (None, None) without nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader",
                              "-i", "0"], capture_output=True, text=True, timeout=30, check=True).stdout
        name, driver = (x.strip() for x in out.strip().splitlines()[0].split(","))
        return name, driver
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None, None


def git_commit() -> str:
    """HEAD of the repository, or "unknown" (the device's copy has no .git:
    pass --commit there)."""
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_results(bench: str, rows: list[dict], commit: str | None, out: str) -> None:
    """Writes bench/results/<bench>.json's layout (../shared/BENCH.md): the
    commit (--commit, else git), the card and driver, the date, the command
    line and `rows`, to `out`."""
    name, driver = device_info()
    doc = {
        "bench": bench,
        "commit": commit or git_commit(),
        "device": name,
        "driver": driver,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([f"bench/{bench}.py"] + sys.argv[1:]),
        "rows": rows,
    }
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps(doc, indent=2) + "\n")
