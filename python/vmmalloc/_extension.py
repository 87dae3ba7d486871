"""The compiled PyTorch adapter (csrc/), built against the installed PyTorch.

``pip install --no-build-isolation ./python`` compiles it as ``vmmalloc._C``.
Without that (``PYTHONPATH=python`` in a source checkout), the first call of
load() compiles it with ``torch.utils.cpp_extension.load`` (a minute or so,
then cached: PyTorch rebuilds it only when a source or a flag changes) and
links it against libvmmalloc.so from vmmalloc._build.library_dir().

Environment: VMMALLOC_TORCH_BUILD_DIR (where the on-first-use build goes;
default PyTorch's extension cache), VMMALLOC_TORCH_VERBOSE=1 (show the
compiler's output), and those of vmmalloc._build.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import threading
from types import ModuleType

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
CSRC = PACKAGE_DIR / "csrc"
JIT_NAME = "vmmalloc_torch_ext"

_lock = threading.Lock()
_module: ModuleType | None = None


def _jit_build() -> ModuleType:
    from torch.utils import cpp_extension

    from . import _build

    include = _build.include_dir()
    libdir = _build.library_dir()
    sources = sorted(str(p) for p in CSRC.glob("*.cpp"))
    if not sources:
        raise _build.BuildError(f"no C++ sources in {CSRC}")
    kwargs = {}
    build_dir = os.environ.get("VMMALLOC_TORCH_BUILD_DIR")
    if build_dir:
        pathlib.Path(build_dir).mkdir(parents=True, exist_ok=True)
        kwargs["build_directory"] = build_dir
    return cpp_extension.load(
        name=JIT_NAME,
        sources=sources,
        extra_include_paths=[str(include), str(CSRC)],
        extra_cflags=["-O2"],
        extra_ldflags=[f"-L{libdir}", "-lvmmalloc", f"-Wl,-rpath,{libdir}"],
        with_cuda=True,
        verbose=os.environ.get("VMMALLOC_TORCH_VERBOSE") == "1",
        **kwargs,
    )


def load() -> ModuleType:
    """The adapter module: the installed vmmalloc._C, else built on first use."""
    global _module
    with _lock:
        if _module is None:
            if any(PACKAGE_DIR.glob("_C.*so")):
                # Installed: an import error here is real (say, libvmmalloc
                # missing beside it), not a reason to build another copy.
                _module = importlib.import_module("vmmalloc._C")
            else:
                _module = _jit_build()
        return _module
