"""Builds the vmmalloc Python package: the PyTorch adapter (vmmalloc._C,
compiled against the installed PyTorch) and a copy of libvmmalloc.so beside
it (vmmalloc/lib, found through the extension's RPATH $ORIGIN/lib).

From the repository root, offline:

    pip install --no-build-isolation ./python

(--no-build-isolation: the adapter must be compiled against the PyTorch that
will import it, which an isolated build environment would not have.)
libvmmalloc is built with CMake from the repository (python/..) unless
VMMALLOC_LIBRARY_DIR names an existing build.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import sys

from setuptools import setup

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent


def _load_build_module():
    # vmmalloc/_build.py by path: importing the package itself needs nothing
    # built yet, but this keeps setup.py free of the package's imports.
    spec = importlib.util.spec_from_file_location("vmmalloc_build", HERE / "vmmalloc" / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_build = _load_build_module()

try:
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension
except ImportError:
    sys.exit("vmmalloc's PyTorch adapter is compiled against the installed PyTorch, and `import "
             "torch` fails here: install PyTorch (a CUDA build) first, then run "
             "`pip install --no-build-isolation ./python`")


def _library_dir() -> pathlib.Path:
    if os.environ.get("VMMALLOC_LIBRARY_DIR"):
        return _build.library_dir()
    return _build.build_library(REPO, HERE / "build" / "libvmmalloc")


LIBRARY_DIR = _library_dir()


class BuildWithLibrary(BuildExtension):
    """Builds the extension, then puts libvmmalloc (its soname file) and the
    public headers in the package."""

    def run(self):
        super().run()
        lib = (LIBRARY_DIR / _build.LIBRARY).resolve()  # libvmmalloc.so.X.Y.Z
        # The name the extension was linked to need: libvmmalloc.so.X (SOVERSION).
        version = lib.name[len(_build.LIBRARY):].lstrip(".")
        soname = _build.LIBRARY + ("." + version.split(".")[0] if version else "")
        targets = [pathlib.Path(self.build_lib) / "vmmalloc"]
        if self.inplace:
            targets.append(HERE / "vmmalloc")
        for pkg in targets:
            (pkg / "lib").mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib, pkg / "lib" / soname)
            shutil.copytree(REPO / "include" / "vmmalloc", pkg / "include" / "vmmalloc",
                            dirs_exist_ok=True)


SOURCES = sorted(str(p.relative_to(HERE)) for p in (HERE / "vmmalloc" / "csrc").glob("*.cpp"))

setup(
    name="vmmalloc",
    version=_build.version(),
    description="vmmalloc: CUDA memory that grows in place, as PyTorch's allocator and as workspaces",
    packages=["vmmalloc"],
    package_data={"vmmalloc": ["csrc/*.hpp", "csrc/*.cpp"]},
    python_requires=">=3.9",
    ext_modules=[
        CUDAExtension(
            name="vmmalloc._C",
            sources=SOURCES,
            include_dirs=[str(REPO / "include"), str(HERE / "vmmalloc" / "csrc")],
            library_dirs=[str(LIBRARY_DIR)],
            libraries=["vmmalloc"],
            extra_compile_args={"cxx": ["-O2"]},
            extra_link_args=["-Wl,-rpath,$ORIGIN/lib"],
        )
    ],
    cmdclass={"build_ext": BuildWithLibrary},
    zip_safe=False,
)
