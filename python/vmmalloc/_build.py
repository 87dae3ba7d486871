"""Where vmmalloc's C library and headers are, building the library if needed.

Used at run time by vmmalloc._extension (to build the PyTorch adapter on first
use) and by setup.py (pip install). Python standard library only: setup.py
imports this file by path, before anything else of the package.

The library is found, in this order:

1. ``VMMALLOC_LIBRARY_DIR``: a directory holding ``libvmmalloc.so`` (a CMake
   build's ``allocator/`` directory, or an install prefix's ``lib/``), with
   ``VMMALLOC_INCLUDE_DIR`` (default: the source tree's ``include/``) for the
   headers;
2. a copy bundled by ``pip install`` (``vmmalloc/lib``, ``vmmalloc/include``);
3. the source tree this file sits in (``python/vmmalloc`` of the repository):
   built with CMake into ``<repository>/build-python`` (only the library
   target; an up-to-date build costs a second).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import re
import shutil
import subprocess

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent.parent  # python/vmmalloc -> the repository
LIBRARY = "libvmmalloc.so"


class BuildError(RuntimeError):
    """vmmalloc's C library could not be found or built."""


def source_tree() -> pathlib.Path | None:
    """The repository root if this package runs from a source checkout."""
    if (SOURCE_ROOT / "CMakeLists.txt").is_file() and (
            SOURCE_ROOT / "include" / "vmmalloc" / "vmmalloc.h").is_file():
        return SOURCE_ROOT
    return None


def version() -> str:
    """The project version of CMakeLists.txt (`project(vmmalloc VERSION x.y.z)`)."""
    root = source_tree()
    if root is None:
        raise BuildError("no vmmalloc source tree beside this package to read the version from")
    m = re.search(r"project\(\s*vmmalloc\s+VERSION\s+([0-9.]+)", (root / "CMakeLists.txt").read_text())
    if not m:
        raise BuildError(f"{root / 'CMakeLists.txt'}: no `project(vmmalloc VERSION ...)`")
    return m.group(1)


def include_dir() -> pathlib.Path:
    """The directory holding vmmalloc/vmmalloc.h."""
    candidates = []
    if os.environ.get("VMMALLOC_INCLUDE_DIR"):
        candidates.append(("VMMALLOC_INCLUDE_DIR", pathlib.Path(os.environ["VMMALLOC_INCLUDE_DIR"])))
    candidates.append(("the installed package", PACKAGE_DIR / "include"))
    root = source_tree()
    if root is not None:
        candidates.append(("the source tree", root / "include"))
    for _, d in candidates:
        if (d / "vmmalloc" / "vmmalloc.h").is_file():
            return d
    tried = ", ".join(f"{what} ({d})" for what, d in candidates)
    raise BuildError(f"vmmalloc's headers (vmmalloc/vmmalloc.h) are not in any of: {tried}; "
                     "set VMMALLOC_INCLUDE_DIR to the directory that holds vmmalloc/vmmalloc.h")


def library_dir() -> pathlib.Path:
    """A directory holding libvmmalloc.so, building it from the source tree if needed."""
    env = os.environ.get("VMMALLOC_LIBRARY_DIR")
    if env:
        d = pathlib.Path(env)
        if not (d / LIBRARY).exists():
            raise BuildError(f"VMMALLOC_LIBRARY_DIR={env}: no {LIBRARY} there")
        return d.resolve()
    bundled = PACKAGE_DIR / "lib"
    if any(bundled.glob(LIBRARY + "*")):
        return bundled
    root = source_tree()
    if root is None:
        raise BuildError(f"no {LIBRARY}: set VMMALLOC_LIBRARY_DIR to a directory holding it "
                         "(a CMake build's allocator/ directory), or install the package with "
                         "`pip install --no-build-isolation ./python` from the repository")
    return build_library(root, root / "build-python")


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """An exclusive lock on `path` (a file), so concurrent builds take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise BuildError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")


def build_library(source: pathlib.Path, build: pathlib.Path, jobs: int | None = None) -> pathlib.Path:
    """Configures (once) and builds the `vmmalloc` shared library target of the
    CMake project at `source` in `build`; returns the directory holding
    libvmmalloc.so. Only the library: tests, tools and benchmarks are off."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BuildError("building vmmalloc's C library needs CMake (>= 3.25) on PATH "
                         "(or set VMMALLOC_LIBRARY_DIR to an existing build)")
    jobs = jobs or int(os.environ.get("VMMALLOC_JOBS", os.cpu_count() or 2))
    with _locked(build / ".vmmalloc-build.lock"):
        # RelWithDebInfo: the project's own default (-O2). GCC 12 at -O3
        # (Release) raises a false -Werror=restrict in the library.
        if not (build / "CMakeCache.txt").is_file():
            _run([cmake, "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                  "-DVMMALLOC_BUILD_TESTS=OFF", "-DVMMALLOC_BUILD_TOOLS=OFF",
                  "-DVMMALLOC_BUILD_BENCH=OFF"])
        _run([cmake, "--build", str(build), "--target", "vmmalloc", "--parallel", str(jobs)])
    out = build / "allocator"
    if not (out / LIBRARY).exists():
        raise BuildError(f"the build in {build} made no {out / LIBRARY}")
    return out
