"""pytest set-up for the PyTorch integration (tests/python).

Every test runs one scenario of scenarios.py in a fresh Python process:
vmmalloc.torch.install() must precede PyTorch's first CUDA allocation, once
per process. This process never allocates CUDA memory itself.

Everything is skipped, cleanly, where PyTorch or a GPU is missing.

Environment:
  VMMALLOC_PYTHONPATH   where the children import vmmalloc from (default:
                        the repository's python/; point it at a
                        `pip install --target` directory to test an install)
  VMMALLOC_LIBRARY_DIR  libvmmalloc.so to link the adapter against (default:
                        built from the repository, see python/vmmalloc/_build.py)
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent


def _skip_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__})"
    return None


SKIP_REASON = _skip_reason()


def pytest_collection_modifyitems(config, items):
    if SKIP_REASON is None:
        return
    marker = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        item.add_marker(marker)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    path = os.environ.get("VMMALLOC_PYTHONPATH", str(REPO / "python"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # deterministic cuBLAS for the training runs
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    return env


def run_child(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=child_env(), capture_output=True,
                          text=True, timeout=timeout)


def _report(proc: subprocess.CompletedProcess) -> str:
    return (f"exit {proc.returncode}\n--- stdout (tail)\n{proc.stdout[-4000:]}\n"
            f"--- stderr (tail)\n{proc.stderr[-8000:]}")


@pytest.fixture(scope="session")
def adapter_built() -> None:
    """Builds (or finds) the compiled adapter once, before any scenario, so a
    build failure is reported once with the compiler's output."""
    proc = run_child(["-c", "import vmmalloc._extension as e; print(e.load().__file__)"],
                     timeout=1800)
    if proc.returncode != 0:
        pytest.fail("building the PyTorch adapter failed:\n" + _report(proc), pytrace=False)


@pytest.fixture
def scenario(adapter_built):
    """scenario(name, *args) runs scenarios.py NAME ARGS (or `script`'s) in a
    fresh process, fails the test with its output unless it exits 0, and
    returns the dict of its RESULT line."""

    def run(name: str, *args: str, timeout: float = 600, script: str = "scenarios.py") -> dict:
        proc = run_child([str(HERE / script), name, *args], timeout=timeout)
        if proc.returncode != 0:
            pytest.fail(f"scenario {name} {' '.join(args)} failed:\n" + _report(proc), pytrace=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            pytest.fail(f"scenario {name} printed no RESULT line:\n" + _report(proc), pytrace=False)
        return json.loads(lines[-1][len("RESULT "):])

    return run
