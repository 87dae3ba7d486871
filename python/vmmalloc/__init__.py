"""vmmalloc: a CUDA device-memory allocator built on the driver's virtual
memory API, whose buffers grow in place.

The PyTorch integration is ``vmmalloc.torch`` (imported on its own, so that
``import vmmalloc`` needs no PyTorch)::

    import torch, vmmalloc.torch
    vmmalloc.torch.install()        # every CUDA tensor from vmmalloc

See docs/pytorch.md in the repository.
"""

from __future__ import annotations


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("vmmalloc")
    except PackageNotFoundError:
        from . import _build

        try:
            return _build.version()  # a source checkout: CMakeLists.txt's version
        except _build.BuildError:
            return "0+unknown"


__version__ = _version()
