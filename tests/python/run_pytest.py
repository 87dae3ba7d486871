#!/usr/bin/env python3
"""CTest's entry to the PyTorch integration tests (tests/python).

Exits 77 (CTest: skipped) where pytest, PyTorch or a GPU is missing, as on
CI; otherwise runs pytest on this directory and exits with its status.

    run_pytest.py [--library-dir DIR] [PYTEST_ARGS...]

--library-dir: the CMake build's directory of libvmmalloc.so, which the
adapter is then linked against (VMMALLOC_LIBRARY_DIR) instead of a build of
its own.
"""

from __future__ import annotations

import os
import pathlib
import sys

SKIP = 77
HERE = pathlib.Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    if argv[:1] == ["--library-dir"]:
        if len(argv) < 2:
            print("run_pytest.py: --library-dir needs a directory", file=sys.stderr)
            return 2
        os.environ["VMMALLOC_LIBRARY_DIR"] = argv[1]
        argv = argv[2:]
    try:
        import pytest
    except ImportError:
        print("skipped: pytest is not installed")
        return SKIP
    try:
        import torch
    except ImportError:
        print("skipped: PyTorch is not installed")
        return SKIP
    if not torch.cuda.is_available():
        print(f"skipped: no CUDA device (torch {torch.__version__})")
        return SKIP
    return int(pytest.main(["-v", "-rs", str(HERE), *argv]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
