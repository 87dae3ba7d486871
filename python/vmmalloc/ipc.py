"""Sharing a workspace with another process, without PyTorch
(docs/ipc.md): the C ABI's workspaces, exports and imports through ctypes.

    import socket, vmmalloc.ipc as ipc
    a, b = socket.socketpair()              # or a listening AF_UNIX socket
    ws = ipc.Workspace(64 << 30, device=0)  # exporter
    ws.grow(6 << 20)
    ex = ws.export()
    ex.serve(a)                             # the export takes the socket over
    # ... in the other process, given b:
    im = ipc.Import(b, device=0)            # maps every chunk, read/write
    im.data_ptr, im.size                    # a device address of this process
    im.update()                             # maps what the exporter added since

Pointers are raw device addresses (ints): wrap them with the array library
of your choice (``cupy.cuda.UnownedMemory``, ``torch`` through DLPack, ...).
Errors are ``vmmalloc.ipc.VmmError`` with the library's message. Streams are
None (the default stream), an int handle, or an object with a
``cuda_stream`` or ``ptr`` attribute.
"""

from __future__ import annotations

import ctypes
import socket as _socket

from ._clib import VmmError, call, stream_arg

__all__ = ["VmmError", "Workspace", "Export", "Import", "configure"]


def configure(conf: str) -> None:
    """vmm_configure: settings in VMMALLOC_CONF's grammar, before first use."""
    call("vmm_configure", conf.encode())


def _take_fd(sock) -> int:
    """The descriptor of `sock` (a socket.socket, detached from it: the C
    side takes it over and closes it, or an int descriptor)."""
    if isinstance(sock, _socket.socket):
        return sock.detach()
    return int(sock)


def _size(fn: str, handle: ctypes.c_void_p) -> int:
    out = ctypes.c_size_t()
    call(fn, handle, ctypes.byref(out))
    return out.value


def _pointer(fn: str, handle: ctypes.c_void_p) -> int:
    out = ctypes.c_void_p()
    call(fn, handle, ctypes.byref(out))
    return out.value or 0


class _Handle:
    """A C handle, closed once (close() or the with-block's end)."""

    _handle: ctypes.c_void_p | None = None

    def _live(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._handle

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Workspace(_Handle):
    """vmm_workspace: `capacity` bytes of address space reserved on `device`
    (-1: the current CUDA device, or 0), nothing mapped until grow()."""

    def __init__(self, capacity: int, device: int = -1) -> None:
        out = ctypes.c_void_p()
        call("vmm_workspace_create", capacity, device, ctypes.byref(out))
        self._handle = out

    def grow(self, new_size: int) -> None:
        """In place: same base, contents kept."""
        call("vmm_workspace_grow", self._live(), new_size)

    def shrink(self, new_size: int, stream=None) -> None:
        """The tail goes back once the work queued on `stream` completes."""
        call("vmm_workspace_shrink", self._live(), new_size, stream_arg(stream))

    @property
    def data_ptr(self) -> int:
        return _pointer("vmm_workspace_data", self._live())

    @property
    def size(self) -> int:
        return _size("vmm_workspace_size", self._live())

    @property
    def capacity(self) -> int:
        return _size("vmm_workspace_capacity", self._live())

    def set_name(self, name: str) -> None:
        """The name snapshots and vmmctl show."""
        call("vmm_workspace_set_name", self._live(), name.encode())

    def export(self) -> "Export":
        return Export(self)

    def close(self, stream=None) -> None:
        """Destroys the workspace once the work queued on `stream` completes."""
        if self._handle is not None:
            call("vmm_workspace_destroy", self._handle, stream_arg(stream))
            self._handle = None


class Export(_Handle):
    """vmm_workspace_export: serves importers of `workspace` (its chunks are
    never reused once they leave it)."""

    def __init__(self, workspace: Workspace) -> None:
        out = ctypes.c_void_p()
        call("vmm_workspace_export_create", workspace._live(), ctypes.byref(out))
        self._handle = out

    def serve(self, sock) -> None:
        """Serves the importer at the other end of `sock` (a connected
        AF_UNIX stream socket, taken over) from a background thread."""
        call("vmm_workspace_export_serve", self._live(), _take_fd(sock))

    def close(self) -> None:
        """Stops serving; importers keep what they mapped."""
        if self._handle is not None:
            call("vmm_workspace_export_destroy", self._handle)
            self._handle = None


class Import(_Handle):
    """vmm_workspace_import: the workspace exported at the other end of
    `sock` (taken over), mapped read/write at an address of this process on
    `device`. Waits up to 60 s for the exporter."""

    def __init__(self, sock, device: int = -1) -> None:
        out = ctypes.c_void_p()
        call("vmm_workspace_import_create", _take_fd(sock), device, ctypes.byref(out))
        self._handle = out

    def update(self, stream=None) -> None:
        """Maps what the exporter added; unmaps what it dropped once the work
        queued on `stream` completes."""
        call("vmm_workspace_import_update", self._live(), stream_arg(stream))

    @property
    def data_ptr(self) -> int:
        return _pointer("vmm_workspace_import_data", self._live())

    @property
    def size(self) -> int:
        """The exporter's size at the last update."""
        return _size("vmm_workspace_import_size", self._live())

    @property
    def capacity(self) -> int:
        return _size("vmm_workspace_import_capacity", self._live())

    def close(self, stream=None) -> None:
        """Unmaps everything once the work queued on `stream` completes."""
        if self._handle is not None:
            call("vmm_workspace_import_destroy", self._handle, stream_arg(stream))
            self._handle = None
