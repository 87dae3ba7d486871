"""vmmalloc for PyTorch.

Two ways to put PyTorch's CUDA tensors on vmmalloc:

- ``install()``: vmmalloc becomes the process's CUDA allocator, on every
  device. Every tensor, cuBLAS workspace and CUDA-graph pool is vmmalloc
  memory, and PyTorch's own memory API (``torch.cuda.memory_stats()``,
  ``empty_cache()``, ``Tensor.record_stream``, ``torch.OutOfMemoryError``,
  graph capture and replay) works on it. Call it right after ``import torch``.
- ``mem_pool()``: a ``torch.cuda.MemPool`` whose segments come from vmmalloc,
  for one part of a program (``with torch.cuda.use_mem_pool(pool):``) while
  the rest keeps PyTorch's allocator; PyTorch caches on top of vmmalloc's
  segments there. It cannot be combined with ``install()`` (PyTorch creates
  no MemPool while a custom allocator is current).

And, with or without either, ``Workspace``: memory with a stable base address
that grows in place, viewed by tensors that stay valid across growth.

``memory_stats()``, ``snapshot()`` and ``empty_cache()`` report on and trim
vmmalloc itself, whichever way it is used. docs/pytorch.md has the details.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from . import _extension

__all__ = [
    "Workspace",
    "configure",
    "empty_cache",
    "install",
    "is_installed",
    "is_sleeping",
    "mem_pool",
    "memory_stats",
    "reset_peak_memory_stats",
    "sleep",
    "snapshot",
    "tag",
    "wake",
]

_lock = threading.Lock()
_pool_allocator: Any = None  # torch.cuda.memory.CUDAPluggableAllocator over vmmalloc


def _ext():
    return _extension.load()


def _require_cuda(what: str) -> None:
    if not torch.cuda.is_available():
        raise RuntimeError(f"vmmalloc.torch.{what} needs a GPU and a CUDA build of PyTorch; "
                           f"torch {torch.__version__} sees no CUDA device here")


def _device_index(device: Any, what: str) -> int:
    """An ordinal from None (the current device), an int, 'cuda[:N]' or a torch.device."""
    if device is None:
        return torch.cuda.current_device()
    if isinstance(device, bool):
        raise TypeError(f"vmmalloc.torch.{what}: device must be an int, 'cuda:N' or a "
                        f"torch.device, not {device!r}")
    if isinstance(device, int):
        index = device
    else:
        try:
            d = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"vmmalloc.torch.{what}: device {device!r} is not a device "
                             "(expected an int, 'cuda:N' or a torch.device)") from e
        if d.type != "cuda":
            raise ValueError(f"vmmalloc.torch.{what}: device {device!r} is not a CUDA device "
                             "(expected an int, 'cuda:N' or a torch.device('cuda', N))")
        index = d.index if d.index is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise ValueError(f"vmmalloc.torch.{what}: there is no cuda:{index} (this process sees "
                         f"{count} CUDA device(s), 0 to {count - 1})")
    return index


def _stream_handle(stream: Any, device: int, what: str) -> int:
    """The cudaStream_t of a torch.cuda.Stream (or ExternalStream) on `device`."""
    if not isinstance(stream, torch.cuda.Stream):
        raise TypeError(f"vmmalloc.torch.{what}: stream must be a torch.cuda.Stream, "
                        f"not {type(stream).__name__}")
    if stream.device.index != device:
        raise ValueError(f"vmmalloc.torch.{what}: the stream is on {stream.device}, the "
                         f"workspace on cuda:{device}")
    return int(stream.cuda_stream)


def _nonnegative_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"vmmalloc.torch.{what} must be an int (bytes), not {value!r}")
    if value < 0:
        raise ValueError(f"vmmalloc.torch.{what} must be >= 0, not {value}")
    return value


# ------------------------------------------------------------------ modes


def install() -> None:
    """Make vmmalloc the CUDA allocator of this process, on every device.

    Call it right after ``import torch``, before any CUDA tensor exists (it
    may follow ``torch.cuda.init()`` or ``torch.cuda.set_device``). Once
    PyTorch's own allocator has handed out memory, raises RuntimeError saying
    so: memory of one allocator cannot be freed by another. Calling it again
    is a no-op.
    """
    _require_cuda("install()")
    _ext().install()


def is_installed() -> bool:
    """Whether vmmalloc is PyTorch's current CUDA allocator."""
    return bool(_ext().installed())


def configure(conf: str) -> None:
    """Apply settings in VMMALLOC_CONF's grammar (``"memory_cap:0.9"``) before
    vmmalloc's first use in this process; docs/configuration.md lists them.
    Raises ValueError naming the key and the accepted values for a bad
    setting, or once vmmalloc is in use."""
    if not isinstance(conf, str):
        raise TypeError(f"vmmalloc.torch.configure: conf must be a str, not {type(conf).__name__}")
    _ext().configure(conf)


def mem_pool(device: Any = None, *, use_on_oom: bool = False) -> torch.cuda.MemPool:
    """A ``torch.cuda.MemPool`` on `device` (default: the current one) whose
    memory comes from vmmalloc::

        pool = vmmalloc.torch.mem_pool()
        with torch.cuda.use_mem_pool(pool):
            x = torch.empty(n, device="cuda")   # from vmmalloc

    With ``install()`` it is a plain ``torch.cuda.MemPool(use_on_oom=...)``:
    a vmmalloc pool of its own (its free memory kept for it, handed back when
    the pool is deleted; ``use_on_oom=True`` lets other allocations take its
    free blocks when the device is full). Without ``install()`` PyTorch's
    caching allocator stays current for everything else and caches blocks
    inside the segments vmmalloc hands the pool (``use_on_oom`` is then
    PyTorch's own).
    """
    _require_cuda("mem_pool()")
    index = _device_index(device, "mem_pool")
    if is_installed():
        with torch.cuda.device(index):
            return torch.cuda.MemPool(use_on_oom=bool(use_on_oom))
    global _pool_allocator
    with _lock:
        if _pool_allocator is None:
            ext = _ext()
            _pool_allocator = torch.cuda.memory.CUDAPluggableAllocator(
                ext.__file__, ext.pool_malloc_symbol, ext.pool_free_symbol)
    with torch.cuda.device(index):
        return torch.cuda.MemPool(_pool_allocator.allocator(), use_on_oom=bool(use_on_oom))


# ------------------------------------------------------------ observability


def memory_stats(device: Any = None) -> dict[str, int]:
    """vmmalloc's counters for `device` (default: the current one).

    The general allocator's (names as in PyTorch's memory_stats, see
    docs/pytorch.md): allocated_bytes, peak_allocated_bytes, requested_bytes,
    peak_requested_bytes, reserved_bytes, peak_reserved_bytes, mapped_bytes,
    cached_bytes, pending_bytes, inactive_split_bytes, active_blocks,
    allocations, frees, stitches, chunk_creates, chunk_releases, ooms,
    fenced_free_waits; and
    those of the live ``Workspace`` objects made here: workspaces,
    workspace_bytes, workspace_mapped_bytes.
    """
    _require_cuda("memory_stats()")
    index = _device_index(device, "memory_stats")
    ext = _ext()
    stats = dict(ext.allocator_stats(index))
    stats.update(ext.workspace_totals(index))
    return stats


def reset_peak_memory_stats(device: Any = None) -> None:
    """Reset vmmalloc's peak counters of `device` (default: the current one)."""
    _require_cuda("reset_peak_memory_stats()")
    _ext().reset_peak_stats(_device_index(device, "reset_peak_memory_stats"))


def snapshot() -> dict[str, Any]:
    """vmmalloc's whole state in this process (every device: counters,
    workspaces and heap segments with their chunks and blocks, the physical
    pool, pending reclaims, recent events), as the JSON document of
    docs/snapshot.md, parsed. Waits for no GPU work."""
    return json.loads(_ext().snapshot_json())


def empty_cache() -> int:
    """Give vmmalloc's free memory back to the device, on every device it has
    served in this process: free chunks are unmapped once the work that used
    them is done (in the background) and the cache is released. Waits for no
    GPU work, unlike ``torch.cuda.empty_cache()`` with PyTorch's allocator.
    Returns the bytes handed back or queued to be."""
    return int(_ext().empty_cache(-1))


# ---------------------------------------------------------- sleep and wake


@contextlib.contextmanager
def tag(name: str) -> Iterator[None]:
    """Tag the CUDA memory this thread allocates through vmmalloc inside the
    block (tags nest; the innermost wins), so that ``sleep(tags=[name])``
    can hand it back to the GPU and ``wake`` restore it (docs/sleep.md).
    A CUDA graph captured inside the block keeps its pool under the tag."""
    if not isinstance(name, str):
        raise TypeError(f"vmmalloc.torch.tag: name must be a str, not {type(name).__name__}")
    ext = _ext()
    ext.tag_push(name)
    try:
        yield
    finally:
        ext.tag_pop()


def _tag_list(tags: str | Iterable[str] | None, what: str) -> list[str]:
    if tags is None:
        return list(_ext().tag_names())
    if isinstance(tags, str):
        return [tags]
    out = list(tags)
    for t in out:
        if not isinstance(t, str):
            raise TypeError(f"vmmalloc.torch.{what}: tags must be str, not {type(t).__name__}")
    return out


def sleep(tags: str | Iterable[str] | None = None, mode: str = "offload", *,
          level: int | None = None) -> dict[str, Any]:
    """Hand the memory of `tags` (default: every tag) back to the GPU.

    ``mode="offload"`` copies the live tensors' bytes to pinned host memory
    first; ``"discard"`` drops them (contents undefined after ``wake``).
    Waits only for the work queued on the streams that used the memory.
    Addresses stay reserved: every tensor and CUDA graph is valid again
    after ``wake``. vLLM's levels: ``level=1`` offloads the tag "weights" and
    discards every other tag, ``level=2`` discards every tag. Returns what
    was done (bytes copied, device bytes released, seconds copying)."""
    if level is not None:
        if level not in (1, 2) or tags is not None:
            raise ValueError("vmmalloc.torch.sleep: level must be 1 or 2, without tags")
        every = _tag_list(None, "sleep")
        keep = ["weights"] if level == 1 and "weights" in every else []
        report = dict(_ext().sleep(keep, False)) if keep else {}
        rest = dict(_ext().sleep([t for t in every if t not in keep], True))
        for k, v in report.items():
            rest[k] = rest.get(k, 0) + v
        return rest
    if mode not in ("offload", "discard"):
        raise ValueError(f"vmmalloc.torch.sleep: mode must be 'offload' or 'discard', not {mode!r}")
    return dict(_ext().sleep(_tag_list(tags, "sleep"), mode == "discard"))


def wake(tags: str | Iterable[str] | None = None, *, keep_host: bool = False) -> dict[str, Any]:
    """Map memory back under `tags` (default: every tag) at the same
    addresses and copy offloaded bytes back. Raises torch.OutOfMemoryError
    if the GPU has too little free memory: the tag then stays asleep with
    its host copy, and a later ``wake`` can succeed. ``keep_host=True`` keeps
    the pinned host buffer for the next sleep (no re-pinning)."""
    return dict(_ext().wake(_tag_list(tags, "wake"), bool(keep_host)))


def is_sleeping(tag: str, device: Any = None) -> bool:
    """Whether `tag`'s memory on `device` (default: the current one) is asleep."""
    _require_cuda("is_sleeping()")
    return bool(_ext().asleep(tag, _device_index(device, "is_sleeping")))


# ------------------------------------------------------------- workspaces


class Workspace:
    """CUDA memory with a stable base address that grows in place.

    ``Workspace(max_bytes, device=None, *, stream=None, name="")`` reserves
    `max_bytes` of address space on `device` (default: the current one) and
    maps nothing yet. ``grow(nbytes)`` maps memory up to `nbytes` behind the
    same base: nothing is copied, nothing waits for the GPU, and tensors
    taken before it stay valid and keep their data. ``shrink(nbytes,
    stream=None)`` hands the tail back once the work queued on `stream`
    (default: the current stream) has completed, without waiting for it.
    ``tensor(shape, dtype, offset=0)`` views the memory as a tensor.

    The workspace lives as long as this object or any tensor viewing it;
    then its memory is freed after the work queued on `stream` (default: the
    stream current at creation). Works with or without ``install()``.
    """

    def __init__(self, max_bytes: int, device: Any = None, *, stream: torch.cuda.Stream | None = None,
                 name: str = "") -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"vmmalloc.torch.Workspace: max_bytes must be an int, not {max_bytes!r}")
        if max_bytes <= 0:
            raise ValueError(f"vmmalloc.torch.Workspace: max_bytes must be > 0, not {max_bytes}")
        if not isinstance(name, str):
            raise TypeError(f"vmmalloc.torch.Workspace: name must be a str, not {name!r}")
        _require_cuda("Workspace")
        index = _device_index(device, "Workspace")
        ext = _ext()
        backend = ext.backend_name(index)
        if backend != "cuda":
            raise RuntimeError(f"vmmalloc serves cuda:{index} from its '{backend}' backend (host "
                               "memory), which CUDA kernels cannot use; remove backend:host from "
                               "VMMALLOC_CONF")
        if stream is None:
            stream = torch.cuda.current_stream(index)
        self._ws = ext.Workspace(max_bytes, index, _stream_handle(stream, index, "Workspace"), name)
        self._device = torch.device("cuda", index)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def size(self) -> int:
        """Bytes usable from the base: the last size grown or shrunk to."""
        return int(self._ws.size)

    @property
    def capacity(self) -> int:
        """The most it can grow to (max_bytes)."""
        return int(self._ws.capacity)

    @property
    def mapped_bytes(self) -> int:
        """Device memory behind it: size rounded up to vmmalloc's chunks."""
        return int(self._ws.mapped_bytes)

    @property
    def data_ptr(self) -> int:
        """The base address; the same for the workspace's whole life."""
        return int(self._ws.data_ptr)

    @property
    def name(self) -> str:
        return str(self._ws.name)

    def grow(self, nbytes: int) -> None:
        """Grow to at least `nbytes` in place (no-op if not larger). Raises
        ValueError beyond the capacity, torch.OutOfMemoryError if the memory
        cannot be had; either way nothing changed."""
        nbytes = _nonnegative_int(nbytes, "Workspace.grow: nbytes")
        if nbytes > self.capacity:
            raise ValueError(f"vmmalloc.torch.Workspace.grow: {nbytes} bytes is more than its "
                             f"capacity of {self.capacity} bytes (max_bytes at creation)")
        self._ws.grow(nbytes)

    def shrink(self, nbytes: int, stream: torch.cuda.Stream | None = None) -> None:
        """Shrink to `nbytes` (no-op if not smaller). The memory past it is
        freed once the work queued on `stream` (default: the current stream)
        so far has completed; work on other streams that uses it must be
        ordered before that stream's (``stream.wait_stream(other)``). Tensors
        viewing the freed part must not be used afterwards."""
        nbytes = _nonnegative_int(nbytes, "Workspace.shrink: nbytes")
        if stream is None:
            stream = torch.cuda.current_stream(self._device.index)
        self._ws.shrink(nbytes, _stream_handle(stream, self._device.index, "Workspace.shrink"))

    def tensor(self, shape: int | Sequence[int], dtype: torch.dtype = torch.uint8,
               offset: int = 0) -> torch.Tensor:
        """A contiguous tensor of `shape` and `dtype` over the workspace's
        bytes from `offset` (a multiple of the dtype's size). It must lie
        within ``size``: grow() first. The tensor keeps the workspace alive
        and stays valid across later grows."""
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        try:
            dims = tuple(int(s) for s in shape)
        except TypeError:
            raise TypeError(f"vmmalloc.torch.Workspace.tensor: shape must be an int or a sequence "
                            f"of ints, not {shape!r}") from None
        if any(isinstance(s, bool) or s < 0 for s in dims):
            raise ValueError(f"vmmalloc.torch.Workspace.tensor: shape {shape!r} has a negative "
                             "or bool dimension")
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"vmmalloc.torch.Workspace.tensor: dtype must be a torch.dtype, "
                            f"not {dtype!r}")
        offset = _nonnegative_int(offset, "Workspace.tensor: offset")
        itemsize = dtype.itemsize
        if offset % itemsize:
            raise ValueError(f"vmmalloc.torch.Workspace.tensor: offset {offset} is not a multiple "
                             f"of {itemsize}, the size of {dtype}")
        nbytes = math.prod(dims) * itemsize
        if offset + nbytes > self.size:
            raise ValueError(f"vmmalloc.torch.Workspace.tensor: {dtype} of shape {dims} at offset "
                             f"{offset} needs bytes [{offset}, {offset + nbytes}), but the "
                             f"workspace's size is {self.size} bytes; grow() it first")
        raw = self._ws.bytes(offset, nbytes)
        if dtype != torch.uint8:
            raw = raw.view(dtype)
        return raw.view(dims)

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return (f"<vmmalloc.torch.Workspace{label} on {self._device}: size {self.size}, "
                f"mapped {self.mapped_bytes}, capacity {self.capacity}, base {self.data_ptr:#x}>")
