"""What a benchmark's results file records about the run: the card and
driver (nvidia-smi) and the commit (git). Shared by bench/replay.py,
bench/torch_train.py (and bench/preload.py) and bench/torch_workspace.py.
Python standard library only."""

from __future__ import annotations

import pathlib
import subprocess

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
