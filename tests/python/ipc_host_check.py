#!/usr/bin/env python3
"""vmmalloc.ipc (the Python IPC binding over the C ABI) in two processes, on
the host backend, where chunks are memfds: no GPU and no PyTorch needed, so
CTest runs it everywhere ("python: ipc binding, two processes, host backend").

The exporter (this process) creates a workspace, fills it and serves it over
a socketpair to an importer (this script again, in a child, driven by
one-line commands on its stdin). The importer checks the bytes, follows a
grow after the export, writes into the shared memory (the exporter must see
it), and closes; errors come back as VmmError naming the problem. Run with
PYTHONPATH=python VMMALLOC_LIBRARY_DIR=<build>/allocator VMMALLOC_CONF=backend:host.
"""

from __future__ import annotations

import ctypes
import socket
import subprocess
import sys

MiB = 1 << 20


def fail(message: str) -> None:
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def holds(ptr: int, n: int, value: int) -> bool:
    return ctypes.string_at(ptr, n) == bytes([value]) * n


def importer(fd: int) -> int:
    import vmmalloc.ipc as ipc

    im = None
    for line in sys.stdin:
        cmd, *args = line.split()
        n = [int(a) for a in args]
        if cmd == "import":
            im = ipc.Import(fd, 0)
            ok = im.size == n[0] and im.capacity == n[1] and holds(im.data_ptr, n[0], n[2])
        elif cmd == "update":  # size, value, offset: the grown part holds value
            im.update()
            ok = im.size == n[0] and holds(im.data_ptr + n[2], n[0] - n[2], n[1])
        elif cmd == "write":  # value, bytes from the start
            ctypes.memset(im.data_ptr, n[0], n[1])
            ok = True
        elif cmd == "close":
            im.close()
            try:
                _ = im.size
                ok = False
            except ValueError:
                ok = True
        else:
            ok = False
        print("ok" if ok else f"bad: {line.strip()}", flush=True)
    return 0


def exporter() -> int:
    a, b = socket.socketpair()
    # The child starts before this process first uses vmmalloc (a process
    # forked after that gets only errors: docs/reliability.md, "a forked child").
    child = subprocess.Popen([sys.executable, __file__, "--import", str(b.fileno())],
                             pass_fds=[b.fileno()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    b.close()

    def ask(command: str) -> None:
        child.stdin.write(command + "\n")
        child.stdin.flush()
        answer = child.stdout.readline().strip()
        if answer != "ok":
            fail(f"importer: {command!r} -> {answer!r}")

    import vmmalloc.ipc as ipc

    ws = ipc.Workspace(64 * MiB, 0)
    ws.set_name("shared")
    ws.grow(6 * MiB)
    ctypes.memset(ws.data_ptr, 0x31, 6 * MiB)
    ex = ws.export()
    ex.serve(a)
    if a.fileno() != -1:
        fail("serve() did not take the socket over")
    ask(f"import {6 * MiB} {64 * MiB} {0x31}")

    base = ws.data_ptr
    ws.grow(16 * MiB)  # after the export: the importer maps the new chunks
    if ws.data_ptr != base or ws.size != 16 * MiB:
        fail("grow moved the workspace or missed its size")
    ctypes.memset(ws.data_ptr + 6 * MiB, 0x32, 10 * MiB)
    ask(f"update {16 * MiB} {0x32} {6 * MiB}")
    ask(f"write {0x77} {MiB}")
    if not holds(ws.data_ptr, MiB, 0x77) or not holds(ws.data_ptr + MiB, 5 * MiB, 0x31):
        fail("the importer's write is not in the exporter's memory")

    # Bad input: a clear error naming the problem, nothing changes.
    try:
        ipc.Workspace(0, 0)
        fail("a workspace of 0 bytes was accepted")
    except ipc.VmmError as e:
        if e.status_name != "VMM_ERROR_INVALID_VALUE" or "capacity" not in str(e):
            fail(f"Workspace(0): {e.status_name}: {e}")
    try:
        ws.grow(128 * MiB)
        fail("a grow past the capacity was accepted")
    except ipc.VmmError as e:
        if e.status_name != "VMM_ERROR_INVALID_VALUE" or ws.size != 16 * MiB:
            fail(f"grow past the capacity: {e.status_name}: {e}, size {ws.size}")
    r, w = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        ex.serve(r)
        fail("a datagram socket was accepted")
    except ipc.VmmError as e:
        if e.status_name != "VMM_ERROR_INVALID_VALUE":
            fail(f"serve(datagram socket): {e.status_name}: {e}")
    w.close()

    # Teardown, the exporter first; the importer keeps its mapping until it closes.
    ex.close()
    ws.close()
    try:
        _ = ws.size
        fail("a closed workspace answered")
    except ValueError:
        pass
    ask("close")
    child.stdin.close()
    if child.wait(timeout=60) != 0:
        fail(f"the importer exited with {child.returncode}")
    print("ipc (python, host backend): all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--import":
        sys.exit(importer(int(sys.argv[2])))
    sys.exit(exporter())
