#!/usr/bin/env python3
"""The driver cost of growing by one physical handle, with and without
POSIX-file-descriptor export requested at cuMemCreate (what vmmalloc's
handles request, for IPC). A diagnostic on the GPU machine: ctypes on
libcuda.so.1, Python standard library only.

    python3 bench/diagnostics/handle_cost.py [--sizes 2,512,1024] [--reps 5] [--grow 1024]   # MiB

Then a grow of --grow MiB made of 1, 2, 4 and 8 handles (create + map each,
one set access), at never-mapped addresses.
"""

from __future__ import annotations

import argparse
import ctypes as C
import statistics
import sys
import time


class Prop(C.Structure):
    _fields_ = [("type", C.c_int), ("requestedHandleTypes", C.c_int), ("loc_type", C.c_int),
                ("loc_id", C.c_int), ("win32", C.c_void_p), ("compressionType", C.c_ubyte),
                ("gpuDirectRDMACapable", C.c_ubyte), ("usage", C.c_ushort), ("reserved", C.c_ubyte * 4)]


class Access(C.Structure):
    _fields_ = [("loc_type", C.c_int), ("loc_id", C.c_int), ("flags", C.c_int)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2,512,1024")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--grow", type=int, default=1024, help="MiB of the chunking comparison")
    a = ap.parse_args()
    cu = C.CDLL("libcuda.so.1")

    def ok(rc, what):
        if rc != 0:
            raise SystemExit(f"{what}: CUresult {rc}")

    ok(cu.cuInit(0), "cuInit")
    dev = C.c_int()
    ok(cu.cuDeviceGet(C.byref(dev), 0), "cuDeviceGet")
    ctx = C.c_void_p()
    ok(cu.cuDevicePrimaryCtxRetain(C.byref(ctx), dev), "retain")
    ok(cu.cuCtxSetCurrent(ctx), "set current")
    va0 = C.c_ulonglong()
    span = 256 << 30  # room for every rep at an address never mapped before
    ok(cu.cuMemAddressReserve(C.byref(va0), C.c_size_t(span), C.c_size_t(0), C.c_ulonglong(0),
                              C.c_ulonglong(0)), "reserve")
    acc = Access(1, 0, 3)  # CU_MEM_LOCATION_TYPE_DEVICE, device 0, READWRITE
    fresh = 0  # next never-mapped offset
    for mib in [int(x) for x in a.sizes.split(",")]:
        size = mib << 20
        for handle_type, name, new_va in ((0, "none", False), (1, "posix-fd", False), (1, "posix-fd", True)):
            name += ", fresh VA" if new_va else ", same VA"
            prop = Prop(1, handle_type, 1, 0, None, 0, 0, 0)
            create, mapping, access, undo = [], [], [], []
            for _ in range(a.reps):
                if new_va:
                    va = C.c_ulonglong(va0.value + fresh)
                    fresh += max(size, 2 << 30)
                else:
                    va = C.c_ulonglong(va0.value + span - (2 << 30))
                h = C.c_ulonglong()
                t0 = time.perf_counter()
                ok(cu.cuMemCreate(C.byref(h), C.c_size_t(size), C.byref(prop), C.c_ulonglong(0)), "create")
                t1 = time.perf_counter()
                ok(cu.cuMemMap(va, C.c_size_t(size), C.c_size_t(0), h, C.c_ulonglong(0)), "map")
                t2 = time.perf_counter()
                ok(cu.cuMemSetAccess(va, C.c_size_t(size), C.byref(acc), C.c_size_t(1)), "access")
                t3 = time.perf_counter()
                ok(cu.cuMemUnmap(va, C.c_size_t(size)), "unmap")
                ok(cu.cuMemRelease(h), "release")
                t4 = time.perf_counter()
                create.append(t1 - t0); mapping.append(t2 - t1); access.append(t3 - t2); undo.append(t4 - t3)
            med = lambda xs: statistics.median(xs) * 1e6  # noqa: E731
            print(f"{mib:5d} MiB {name:19s}: create {med(create):7.1f} us, map {med(mapping):6.1f} us, "
                  f"set access {med(access):7.1f} us, unmap+release {med(undo):7.1f} us", flush=True)
    # A grow of --grow MiB as 1, 2, 4 or 8 handles (created, mapped, then one
    # set access over the whole range), at never-mapped addresses: what a
    # workspace grow costs with each chunking.
    prop = Prop(1, 1, 1, 0, None, 0, 0, 0)
    grow = a.grow << 20
    for parts in (1, 2, 4, 8):
        piece = grow // parts
        totals = []
        for _ in range(a.reps):
            base = va0.value + fresh
            fresh += grow
            if fresh + grow > span:
                fresh = 0
            handles = []
            t0 = time.perf_counter()
            for i in range(parts):
                h = C.c_ulonglong()
                ok(cu.cuMemCreate(C.byref(h), C.c_size_t(piece), C.byref(prop), C.c_ulonglong(0)), "create")
                ok(cu.cuMemMap(C.c_ulonglong(base + i * piece), C.c_size_t(piece), C.c_size_t(0), h,
                               C.c_ulonglong(0)), "map")
                handles.append(h)
            ok(cu.cuMemSetAccess(C.c_ulonglong(base), C.c_size_t(grow), C.byref(acc), C.c_size_t(1)),
               "access")
            totals.append(time.perf_counter() - t0)
            ok(cu.cuMemUnmap(C.c_ulonglong(base), C.c_size_t(grow)), "unmap")
            for h in handles:
                ok(cu.cuMemRelease(h), "release")
        totals.sort()
        print(f"grow {a.grow} MiB as {parts} handle(s) of {piece >> 20} MiB: median "
              f"{statistics.median(totals) * 1e6:7.1f} us, slowest {totals[-1] * 1e6:7.1f} us "
              f"({a.reps} grows)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
