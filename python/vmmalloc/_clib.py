"""vmmalloc's C ABI (include/vmmalloc/vmmalloc.h) through ctypes, for the
parts of the package that need no PyTorch (vmmalloc.ipc), and for programs
that run vmmalloc under LD_PRELOAD: tag(), sleep(), wake() and is_sleeping()
below (docs/sleep.md).

The library is the one vmmalloc._build finds (VMMALLOC_LIBRARY_DIR, the copy
pip bundled, or a build from the source tree), loaded RTLD_GLOBAL so that a
PyTorch adapter loaded later in the process shares its allocator state.
Every call goes through ``call``: a status other than VMM_SUCCESS raises
VmmError with the library's message (vmm_last_error()).
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterable, Iterator
from typing import Any

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


class _SleepReport(ctypes.Structure):
    """vmm_sleep_report."""

    _fields_ = [
        ("live_bytes", _SIZE),
        ("copied_bytes", _SIZE),
        ("device_bytes", _SIZE),
        ("pinned_bytes", _SIZE),
        ("tags_changed", _SIZE),
        ("copy_seconds", ctypes.c_double),
    ]


_NAMES = ctypes.POINTER(ctypes.c_char_p)
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
    "vmm_malloc": [ctypes.POINTER(_P), _SIZE, ctypes.c_int, _P],
    "vmm_free": [_P, _P],
    "vmm_tag_push": [ctypes.c_char_p],
    "vmm_tag_pop": [],
    "vmm_sleep": [ctypes.c_int, _NAMES, _SIZE, ctypes.c_int, ctypes.POINTER(_SleepReport)],
    "vmm_wake": [ctypes.c_int, _NAMES, _SIZE, ctypes.c_int, ctypes.POINTER(_SleepReport)],
    "vmm_is_sleeping": [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)],
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


# ---------------------------------------------------------- sleep and wake
# The C ABI's tags, sleep and wake (docs/sleep.md) for a process whose
# allocations vmmalloc serves without PyTorch's adapter (LD_PRELOAD). With
# the adapter, vmmalloc.torch has the same functions.

_SLEEP_MODES = {"offload": 0, "discard": 1}


@contextlib.contextmanager
def tag(name: str) -> Iterator[None]:
    """Tags what this thread allocates through vmmalloc inside the block
    (vmm_tag_push / vmm_tag_pop; tags nest, the innermost wins)."""
    if not isinstance(name, str):
        raise TypeError(f"tag: name must be a str, not {type(name).__name__}")
    call("vmm_tag_push", name.encode())
    try:
        yield
    finally:
        call("vmm_tag_pop")


def _names(tags: str | Iterable[str], what: str):
    """`tags` (one name or several) as a C array of char*, and its length."""
    names = [tags] if isinstance(tags, str) else list(tags)
    for t in names:
        if not isinstance(t, str):
            raise TypeError(f"{what}: tags must be str, not {type(t).__name__}")
    return (ctypes.c_char_p * len(names))(*[t.encode() for t in names]), len(names)


def _report(r: _SleepReport) -> dict[str, Any]:
    return {name: getattr(r, name) for name, _ in _SleepReport._fields_}


def sleep(tags: str | Iterable[str], mode: str = "offload", device: int = -1) -> dict[str, Any]:
    """vmm_sleep: hands the memory of `tags` on `device` (-1: every device
    used so far) back to the device, its live bytes copied to pinned host
    memory first (``mode="offload"``) or dropped (``"discard"``). Returns the
    report (live_bytes, copied_bytes, device_bytes, pinned_bytes,
    tags_changed, copy_seconds)."""
    if mode not in _SLEEP_MODES:
        raise ValueError(f"sleep: mode must be 'offload' or 'discard', not {mode!r}")
    names, n = _names(tags, "sleep")
    report = _SleepReport()
    call("vmm_sleep", device, names, n, _SLEEP_MODES[mode], ctypes.byref(report))
    return _report(report)


def wake(tags: str | Iterable[str], keep_host: bool = False, device: int = -1) -> dict[str, Any]:
    """vmm_wake: maps memory back under `tags` at the same addresses and
    copies offloaded bytes back; ``keep_host`` keeps the pinned host buffer
    for the next sleep. VmmError VMM_ERROR_OUT_OF_MEMORY if the device has
    too little free memory (the tags stay asleep, a later wake can succeed)."""
    names, n = _names(tags, "wake")
    report = _SleepReport()
    call("vmm_wake", device, names, n, 1 if keep_host else 0, ctypes.byref(report))
    return _report(report)


def is_sleeping(tag: str, device: int = 0) -> bool:
    """vmm_is_sleeping: whether `tag` is asleep on `device` (-1: the current one)."""
    if not isinstance(tag, str):
        raise TypeError(f"is_sleeping: tag must be a str, not {type(tag).__name__}")
    out = ctypes.c_int()
    call("vmm_is_sleeping", device, tag.encode(), ctypes.byref(out))
    return bool(out.value)
