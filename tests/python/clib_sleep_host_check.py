#!/usr/bin/env python3
"""Sleep and wake through vmmalloc._clib (ctypes over the C ABI: tag(),
sleep(), wake(), is_sleeping()) on the host backend, where device memory is
host memory that ctypes can read and write: no GPU and no PyTorch needed,
so CTest runs it everywhere ("python: sleep binding (ctypes), host backend").
Run with PYTHONPATH=python VMMALLOC_LIBRARY_DIR=<build>/allocator
VMMALLOC_CONF=backend:host.
"""

from __future__ import annotations

import ctypes
import sys

MiB = 1 << 20
REPORT_KEYS = {"live_bytes", "copied_bytes", "device_bytes", "pinned_bytes", "tags_changed",
               "copy_seconds"}


def fail(message: str) -> None:
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def expect(cond: bool, message: str) -> None:
    if not cond:
        fail(message)


def expect_error(fn, kind, what: str, status: str | None = None) -> None:
    try:
        fn()
    except kind as e:
        if status is not None and getattr(e, "status_name", None) != status:
            fail(f"{what}: {status} expected, got {e.status_name}: {e}")
        return
    fail(f"{what}: no {kind.__name__} raised")


def main() -> int:
    from vmmalloc import _clib as c

    lib = c.lib()
    lib.vmm_malloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_int,
                               ctypes.c_void_p]
    lib.vmm_malloc.restype = ctypes.c_int
    lib.vmm_free.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.vmm_free.restype = ctypes.c_int

    def malloc(n: int) -> int:
        p = ctypes.c_void_p()
        c.call("vmm_malloc", ctypes.byref(p), n, 0, None)
        return p.value

    # Scopes nest; the innermost wins; a pop with none open fails.
    with c.tag("py.weights"):
        w1 = malloc(3 * MiB)
        with c.tag("py.kv"):
            kv = malloc(2 * MiB)
        w2 = malloc(1 * MiB)
    untagged = malloc(1 * MiB)
    expect_error(lambda: c.call("vmm_tag_pop"), c.VmmError, "pop with no scope",
                 "VMM_ERROR_INVALID_VALUE")
    for p, n, v in ((w1, 3 * MiB, 0x31), (w2, 1 * MiB, 0x32), (kv, 2 * MiB, 0x33),
                    (untagged, 1 * MiB, 0x34)):
        ctypes.memset(p, v, n)

    # Offload "py.weights", discard "py.kv".
    r = c.sleep("py.weights")
    expect(set(r) == REPORT_KEYS, f"report keys {sorted(r)}")
    expect(r["tags_changed"] == 1 and r["live_bytes"] == 4 * MiB, f"offload report {r}")
    expect(r["copied_bytes"] == 4 * MiB and r["device_bytes"] > 0, f"offload report {r}")
    r = c.sleep(["py.kv"], mode="discard", device=0)
    expect(r["tags_changed"] == 1 and r["copied_bytes"] == 0, f"discard report {r}")
    expect(c.is_sleeping("py.weights") and c.is_sleeping("py.kv", device=-1), "not asleep")
    expect(ctypes.string_at(untagged, MiB) == b"\x34" * MiB, "untagged memory changed")
    expect_error(lambda: c.sleep("py.weights", mode="level1"), ValueError, "bad mode")

    # Allocating under a sleeping tag fails.
    def under_sleeping_tag():
        with c.tag("py.weights"):
            malloc(MiB)

    expect_error(under_sleeping_tag, c.VmmError, "allocation under a sleeping tag",
                 "VMM_ERROR_INVALID_VALUE")

    r = c.wake(["py.weights", "py.kv"], keep_host=True)
    expect(r["tags_changed"] == 2 and r["copied_bytes"] == 4 * MiB, f"wake report {r}")
    expect(not c.is_sleeping("py.weights") and not c.is_sleeping("py.kv"), "still asleep")
    expect(ctypes.string_at(w1, 3 * MiB) == b"\x31" * (3 * MiB), "w1 lost its bytes")
    expect(ctypes.string_at(w2, MiB) == b"\x32" * MiB, "w2 lost its bytes")
    ctypes.memset(kv, 0x44, 2 * MiB)  # discarded: mapped again, contents undefined
    expect(ctypes.string_at(kv, 2 * MiB) == b"\x44" * (2 * MiB), "kv not writable after wake")
    # keep_host kept the pinned buffer: the next offload pins nothing.
    r = c.sleep("py.weights")
    expect(r["pinned_bytes"] == 0 and r["copied_bytes"] == 4 * MiB, f"second sleep {r}")
    c.wake("py.weights")

    # Bad arguments.
    expect_error(lambda: c.sleep("bad name"), c.VmmError, "bad name", "VMM_ERROR_INVALID_VALUE")
    expect_error(lambda: c.wake(["py.weights", ""]), c.VmmError, "empty name",
                 "VMM_ERROR_INVALID_VALUE")
    expect_error(lambda: c.sleep([1]), TypeError, "non-str tag")
    expect_error(lambda: c.is_sleeping("py.weights", device=7), c.VmmError, "bad device",
                 "VMM_ERROR_INVALID_VALUE")
    expect_error(lambda: c.tag("a b").__enter__(), c.VmmError, "bad tag scope",
                 "VMM_ERROR_INVALID_VALUE")
    expect(c.sleep([])["tags_changed"] == 0, "no tags")

    for p in (w1, w2, kv, untagged):
        c.call("vmm_free", p, None)
    print("sleep (python ctypes, host backend): all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
