#!/usr/bin/env python3
"""Sleep and wake of tagged memory at link speed (docs/sleep.md).

One process per system holds --live-gib of live CUDA tensors (a mix of
256 MiB and 16 MiB ones) plus --cached-gib allocated and freed again, then
hands the memory back to the GPU and restores it, --cycles times:

  pinned-copy            the link limit: PyTorch copy_ into host tensors
                         pinned beforehand and back (non_blocking, one
                         synchronize each way); nothing is released
  per-allocation-memcpy  torch_memory_saver's method, written here: each
                         tensor its own cuMemCreate/cuMemMap; pause = per
                         allocation cudaMallocHost + synchronous cudaMemcpy,
                         then cuMemUnmap + cuMemRelease; resume the reverse
  vmmalloc               vmmalloc.torch.install(), tensors made under
                         tag("weights"); sleep(offload) / wake(keep_host).
                         With --front-end c: the same blocks from the C
                         library (vmm_malloc under vmm_tag_push, through
                         vmmalloc._clib), seen by PyTorch through
                         __cuda_array_interface__; no adapter build needed.
                         The row's front_end field says which ran.

Fields per row (cycle 1 excluded from the medians: it pins host memory;
first_* give it): sleep_s, wake_s, sleep_GBps, wake_GBps, bytes_copied,
live_bytes, device_bytes_freed (cuMemGetInfo before and after the sleep),
device_used_after_sleep, data_ok (every tensor's checksum kept).
Writes bench/results/sleep_wake.json (../shared/BENCH.md format).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run_info import ROOT, write_results  # noqa: E402

SYSTEMS = ["pinned-copy", "per-allocation-memcpy", "vmmalloc"]
MiB = 1 << 20
GiB = 1 << 30


def tensor_sizes(live_gib: float) -> list[int]:
    """Three quarters of the bytes in 256 MiB tensors, the rest in 16 MiB ones."""
    live = int(live_gib * GiB)
    big = (live * 3 // 4) // (256 * MiB)
    small = (live - big * 256 * MiB) // (16 * MiB)
    return [256 * MiB] * big + [16 * MiB] * small


def checksum(ts) -> list[float]:
    import torch
    return [float(t.view(torch.int32)[:: 4097].double().sum().item()) for t in ts]


def fill(ts) -> None:
    import torch
    for i, t in enumerate(ts):
        t.view(torch.int32).copy_(torch.arange(t.numel() // 4, device=t.device,
                                               dtype=torch.int32) * (i + 7))


class DriverVmm:
    """cuMemCreate / cuMemMap per allocation (torch_memory_saver's layout)."""

    def __init__(self):
        import torch
        torch.cuda.init()
        torch.empty(1, device="cuda")  # makes the primary context current for the driver calls
        self.cu = ctypes.CDLL("libcuda.so.1")
        self.dev = torch.cuda.current_device()

    def check(self, rc, what):
        if rc != 0:
            raise RuntimeError(f"{what} failed: {rc}")

    def prop(self):
        class Loc(ctypes.Structure):
            _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]

        class Prop(ctypes.Structure):
            _fields_ = [("type", ctypes.c_int), ("requestedHandleTypes", ctypes.c_int),
                        ("location", Loc), ("win32HandleMetaData", ctypes.c_void_p),
                        ("allocFlags", ctypes.c_ubyte * 8)]
        p = Prop()
        p.type = 1  # CU_MEM_ALLOCATION_TYPE_PINNED
        p.location.type = 1  # CU_MEM_LOCATION_TYPE_DEVICE
        p.location.id = self.dev
        return p, Loc

    def create_map(self, va, size):
        p, Loc = self.prop()
        h = ctypes.c_ulonglong()
        self.check(self.cu.cuMemCreate(ctypes.byref(h), ctypes.c_size_t(size), ctypes.byref(p),
                                       ctypes.c_ulonglong(0)), "cuMemCreate")
        self.check(self.cu.cuMemMap(ctypes.c_ulonglong(va), ctypes.c_size_t(size), ctypes.c_size_t(0),
                                    h, ctypes.c_ulonglong(0)), "cuMemMap")

        class Access(ctypes.Structure):
            _fields_ = [("location", Loc), ("flags", ctypes.c_int)]
        a = Access()
        a.location.type = 1
        a.location.id = self.dev
        a.flags = 3  # READWRITE
        self.check(self.cu.cuMemSetAccess(ctypes.c_ulonglong(va), ctypes.c_size_t(size), ctypes.byref(a),
                                          ctypes.c_size_t(1)), "cuMemSetAccess")
        return h

    def reserve(self, size):
        va = ctypes.c_ulonglong()
        self.check(self.cu.cuMemAddressReserve(ctypes.byref(va), ctypes.c_size_t(size), ctypes.c_size_t(0),
                                               ctypes.c_ulonglong(0), ctypes.c_ulonglong(0)),
                   "cuMemAddressReserve")
        return va.value

    def host_alloc(self, size):  # cudaMallocHost
        p = ctypes.c_void_p()
        self.check(self.cu.cuMemHostAlloc(ctypes.byref(p), ctypes.c_size_t(size), ctypes.c_uint(0)),
                   "cuMemHostAlloc")
        return p.value

    def host_free(self, p):
        self.check(self.cu.cuMemFreeHost(ctypes.c_void_p(p)), "cuMemFreeHost")

    def to_host(self, p, va, size):  # synchronous cudaMemcpy
        self.check(self.cu.cuMemcpyDtoH_v2(ctypes.c_void_p(p), ctypes.c_ulonglong(va), ctypes.c_size_t(size)),
                   "cuMemcpyDtoH")

    def to_device(self, va, p, size):
        self.check(self.cu.cuMemcpyHtoD_v2(ctypes.c_ulonglong(va), ctypes.c_void_p(p), ctypes.c_size_t(size)),
                   "cuMemcpyHtoD")

    def unmap_release(self, va, size, h):
        self.check(self.cu.cuMemUnmap(ctypes.c_ulonglong(va), ctypes.c_size_t(size)), "cuMemUnmap")
        self.check(self.cu.cuMemRelease(h), "cuMemRelease")


def as_tensor(va, size):
    import torch

    class Cai:
        __cuda_array_interface__ = {"shape": (size,), "typestr": "|u1", "data": (va, False),
                                    "version": 3, "strides": None}
    return torch.as_tensor(Cai(), device="cuda")


def mem_used() -> int:
    import torch
    free, total = torch.cuda.mem_get_info()
    return total - free


def c_malloc(clib, n: int) -> int:
    p = ctypes.c_void_p()
    clib.call("vmm_malloc", ctypes.byref(p), n, 0, None)
    return p.value


def worker(system: str, live_gib: float, cached_gib: float, cycles: int, front_end: str) -> dict:
    import torch
    sizes = tensor_sizes(live_gib)
    live = sum(sizes)
    rows = {"sleep_s": [], "wake_s": [], "bytes_copied": 0, "device_bytes_freed": [],
            "device_used_after_sleep": []}
    if system == "vmmalloc":
        if front_end == "torch":
            import vmmalloc.torch as vt
            vt.install()
            with vt.tag("weights"):
                ts = [torch.empty(n, dtype=torch.uint8, device="cuda") for n in sizes]
                spare = [torch.empty(256 * MiB, dtype=torch.uint8, device="cuda")
                         for _ in range(int(cached_gib * GiB) // (256 * MiB))]
            del spare  # freed but cached under the tag
        else:
            import vmmalloc._clib as vt
            torch.cuda.init()
            with vt.tag("weights"):
                blocks = [c_malloc(vt, n) for n in sizes]
                spare = [c_malloc(vt, 256 * MiB) for _ in range(int(cached_gib * GiB) // (256 * MiB))]
            for p in spare:  # freed but cached under the tag
                vt.call("vmm_free", p, None)
            ts = [as_tensor(p, n) for p, n in zip(blocks, sizes)]
        fill(ts)
        before = checksum(ts)
        torch.cuda.synchronize()
        for _ in range(cycles):
            used = mem_used()
            t0 = time.perf_counter()
            r = vt.sleep("weights", "offload")
            t1 = time.perf_counter()
            rows["device_bytes_freed"].append(used - mem_used())
            rows["device_used_after_sleep"].append(mem_used())
            t2 = time.perf_counter()
            w = vt.wake("weights", keep_host=True)
            t3 = time.perf_counter()
            rows["sleep_s"].append(t1 - t0)
            rows["wake_s"].append(t3 - t2)
            rows["bytes_copied"] = r["copied_bytes"]
            rows["wake_bytes_copied"] = w["copied_bytes"]
        ok = checksum(ts) == before
    elif system == "pinned-copy":
        ts = [torch.empty(n, dtype=torch.uint8, device="cuda") for n in sizes]
        fill(ts)
        before = checksum(ts)
        host = [torch.empty(n, dtype=torch.uint8, pin_memory=True) for n in sizes]
        torch.cuda.synchronize()
        for _ in range(cycles):
            used = mem_used()
            t0 = time.perf_counter()
            for h, t in zip(host, ts):
                h.copy_(t, non_blocking=True)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            rows["device_bytes_freed"].append(used - mem_used())
            rows["device_used_after_sleep"].append(mem_used())
            t2 = time.perf_counter()
            for h, t in zip(host, ts):
                t.copy_(h, non_blocking=True)
            torch.cuda.synchronize()
            t3 = time.perf_counter()
            rows["sleep_s"].append(t1 - t0)
            rows["wake_s"].append(t3 - t2)
            rows["bytes_copied"] = live
        ok = checksum(ts) == before
    else:  # per-allocation-memcpy
        d = DriverVmm()
        allocs = []
        for n in sizes:
            va = d.reserve(n)
            allocs.append([va, n, d.create_map(va, n)])
        ts = [as_tensor(va, n) for va, n, _ in allocs]
        fill(ts)
        before = checksum(ts)
        torch.cuda.synchronize()
        for _ in range(cycles):
            used = mem_used()
            t0 = time.perf_counter()
            hosts = []
            for a in allocs:
                h = d.host_alloc(a[1])
                d.to_host(h, a[0], a[1])
                d.unmap_release(a[0], a[1], a[2])
                hosts.append(h)
            t1 = time.perf_counter()
            rows["device_bytes_freed"].append(used - mem_used())
            rows["device_used_after_sleep"].append(mem_used())
            t2 = time.perf_counter()
            for a, h in zip(allocs, hosts):
                a[2] = d.create_map(a[0], a[1])
                d.to_device(a[0], h, a[1])
                d.host_free(h)
            torch.cuda.synchronize()
            t3 = time.perf_counter()
            rows["sleep_s"].append(t1 - t0)
            rows["wake_s"].append(t3 - t2)
            rows["bytes_copied"] = live
        ok = checksum(ts) == before
    rows["live_bytes"] = live
    rows["data_ok"] = ok
    if system == "vmmalloc":
        rows["front_end"] = front_end
    return rows


def summarize(system: str, raw: dict) -> dict:
    steady = slice(1, None) if len(raw["sleep_s"]) > 1 else slice(None)
    sleep_s = statistics.median(raw["sleep_s"][steady])
    wake_s = statistics.median(raw["wake_s"][steady])
    live = raw["live_bytes"]
    return {
        "system": system,
        "live_bytes": live,
        "bytes_copied": raw["bytes_copied"],
        "sleep_s": round(sleep_s, 4),
        "wake_s": round(wake_s, 4),
        "sleep_GBps": round(live / sleep_s / 1e9, 2),
        "wake_GBps": round(live / wake_s / 1e9, 2),
        "first_sleep_s": round(raw["sleep_s"][0], 4),
        "first_wake_s": round(raw["wake_s"][0], 4),
        "sleep_s_runs": [round(x, 4) for x in raw["sleep_s"]],
        "wake_s_runs": [round(x, 4) for x in raw["wake_s"]],
        "device_bytes_freed": int(statistics.median(raw["device_bytes_freed"][steady])),
        "device_used_after_sleep": int(statistics.median(raw["device_used_after_sleep"][steady])),
        "data_ok": raw["data_ok"],
        **({"front_end": raw["front_end"]} if "front_end" in raw else {}),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--live-gib", type=float, default=16.0)
    ap.add_argument("--cached-gib", type=float, default=4.0)
    ap.add_argument("--cycles", type=int, default=4)
    ap.add_argument("--front-end", choices=["torch", "c"], default="torch",
                    help="vmmalloc's front end: the PyTorch adapter (install()) or the C library")
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sleep_wake.json"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.live_gib, args.cached_gib, args.cycles,
                                args.front_end)), flush=True)
        return 0
    systems = [s for s in args.systems.split(",") if s]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        ap.error(f"--systems: unknown {bad}; choose from {', '.join(SYSTEMS)}")
    rows = []
    for s in systems:
        cmd = [sys.executable, __file__, "--worker", s, "--live-gib", str(args.live_gib),
               "--cached-gib", str(args.cached_gib), "--cycles", str(args.cycles),
               "--front-end", args.front_end]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT / "python") + os.pathsep + env.get("PYTHONPATH", "")
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
        row = summarize(s, json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_results("sleep_wake", rows, args.commit, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
