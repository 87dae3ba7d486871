"""vmmalloc's C ABI (include/vmmalloc/vmmalloc.h) through ctypes, for the
parts of the package that need no PyTorch (vmmalloc.ipc).

The library is the one vmmalloc._build finds (VMMALLOC_LIBRARY_DIR, the copy
pip bundled, or a build from the source tree), loaded RTLD_GLOBAL so that a
PyTorch adapter loaded later in the process shares its allocator state.
Every call goes through ``call``: a status other than VMM_SUCCESS raises
VmmError with the library's message (vmm_last_error()).
"""

from __future__ import annotations

import ctypes
import threading

from . import _build

VMM_SUCCESS = 0
STATUS_NAMES = {
    1: "VMM_ERROR_OUT_OF_MEMORY",
    2: "VMM_ERROR_INVALID_VALUE",
    3: "VMM_ERROR_DRIVER",
    4: "VMM_ERROR_CONFIG",
    5: "VMM_ERROR_NOT_SUPPORTED",
    6: "VMM_ERROR_UNKNOWN_POINTER",
    7: "VMM_ERROR_INTERNAL",
}


class VmmError(RuntimeError):
    """A vmmalloc call failed: ``status`` is its vmm_status, the message the
    library's (vmm_last_error())."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.status_name = STATUS_NAMES.get(status, f"vmm_status {status}")


_P = ctypes.c_void_p
_SIZE = ctypes.c_size_t
# name: argument types (every function returns a vmm_status, an int)
_SIGNATURES = {
    "vmm_configure": [ctypes.c_char_p],
    "vmm_workspace_create": [_SIZE, ctypes.c_int, ctypes.POINTER(_P)],
    "vmm_workspace_grow": [_P, _SIZE],
    "vmm_workspace_shrink": [_P, _SIZE, _P],
    "vmm_workspace_data": [_P, ctypes.POINTER(_P)],
    "vmm_workspace_size": [_P, ctypes.POINTER(_SIZE)],
    "vmm_workspace_capacity": [_P, ctypes.POINTER(_SIZE)],
    "vmm_workspace_set_name": [_P, ctypes.c_char_p],
    "vmm_workspace_destroy": [_P, _P],
    "vmm_workspace_export_create": [_P, ctypes.POINTER(_P)],
    "vmm_workspace_export_serve": [_P, ctypes.c_int],
    "vmm_workspace_export_destroy": [_P],
    "vmm_workspace_import_create": [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_P)],
    "vmm_workspace_import_update": [_P, _P],
    "vmm_workspace_import_data": [_P, ctypes.POINTER(_P)],
    "vmm_workspace_import_size": [_P, ctypes.POINTER(_SIZE)],
    "vmm_workspace_import_capacity": [_P, ctypes.POINTER(_SIZE)],
    "vmm_workspace_import_destroy": [_P, _P],
}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    """libvmmalloc.so, loaded once, with the signatures above declared."""
    global _lib
    with _lock:
        if _lib is None:
            loaded = ctypes.CDLL(str(_build.library_dir() / _build.LIBRARY), mode=ctypes.RTLD_GLOBAL)
            loaded.vmm_last_error.restype = ctypes.c_char_p
            loaded.vmm_last_error.argtypes = []
            for name, argtypes in _SIGNATURES.items():
                fn = getattr(loaded, name)
                fn.argtypes = argtypes
                fn.restype = ctypes.c_int
            _lib = loaded
        return _lib


def call(name: str, *args) -> None:
    """Calls the C function `name`; raises VmmError unless it succeeded."""
    library = lib()
    status = getattr(library, name)(*args)
    if status != VMM_SUCCESS:
        message = library.vmm_last_error()
        raise VmmError(status, message.decode(errors="replace") if message else name)


def stream_arg(stream) -> ctypes.c_void_p:
    """A stream argument: None (the default stream), an int handle, or an
    object with a ``cuda_stream`` (torch.cuda.Stream) or ``ptr`` (cupy) attribute."""
    if stream is None:
        return ctypes.c_void_p(None)
    for attr in ("cuda_stream", "ptr"):
        if hasattr(stream, attr):
            return ctypes.c_void_p(int(getattr(stream, attr)))
    return ctypes.c_void_p(int(stream))
