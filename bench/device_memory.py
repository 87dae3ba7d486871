#!/usr/bin/env python3
"""Device memory in use, as the driver reports it, for the PyTorch benchmarks.

docs/benchmarks.md's `peak_device_bytes`: cuMemGetInfo (total - free) called
on libcuda.so.1 directly through ctypes (never through an interposed runtime
call), read after every measured operation by the benchmark, and by a
sampler in a process of its own (so that neither the GIL nor the measured
program slows it down) for peaks inside an operation. cuMemGetInfo reports
the whole device, so the sampler sees the measured process's memory; its own
context is set up before the benchmark takes its baseline, so that is
subtracted with the rest.

    meter = DeviceMemory(device)          # in the measured process
    sampler = Sampler(device); sampler.start()   # before the baseline
    ...
    peak, samples, seconds = sampler.stop()

Run as a program it is the sampler: ``device_memory.py --sample DEVICE [--hz N]``
prints ``ready`` once polling, and on SIGTERM one JSON line
{"max_used": bytes, "samples": n, "seconds": s}. Python standard library only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import pathlib
import signal
import subprocess
import sys
import time


class DeviceMemory:
    """cuMemGetInfo on the driver of `device` (an ordinal as CUDA numbers it
    in this process). Uses the device's primary context (the one PyTorch
    uses), retaining it: in the measured process it exists already."""

    def __init__(self, device: int = 0) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")
        self._check(self.lib.cuInit(0), "cuInit")
        dev = ctypes.c_int()
        self._check(self.lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
        ctx = ctypes.c_void_p()
        self._check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
        self.ctx = ctx
        self._set_current = self.lib.cuCtxSetCurrent
        self.fn = self.lib.cuMemGetInfo_v2
        self.fn.argtypes = [ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
        self.fn.restype = ctypes.c_int
        self.free = ctypes.c_size_t()
        self.total = ctypes.c_size_t()
        self._free_p = ctypes.byref(self.free)
        self._total_p = ctypes.byref(self.total)
        self._check(self._set_current(self.ctx), "cuCtxSetCurrent")

    @staticmethod
    def _check(rc: int, call: str) -> None:
        if rc != 0:
            raise RuntimeError(f"{call} failed: CUresult {rc}")

    def used(self) -> int:
        rc = self.fn(self._free_p, self._total_p)
        if rc != 0:
            # Another thread's current context may differ: make ours current.
            self._check(self._set_current(self.ctx), "cuCtxSetCurrent")
            self._check(self.fn(self._free_p, self._total_p), "cuMemGetInfo")
        return self.total.value - self.free.value


# The sampler's default rate. Every reading is an ioctl into the GPU driver,
# as are the measured allocators' create/map/set-access calls: polling as
# fast as it goes (~35 kHz) can contend with them. docs/benchmarks.md asks
# for at least 1 kHz; bench/workspace_growth samples at 2 kHz too.
DEFAULT_HZ = 2000.0


class Sampler:
    """device_memory.py --sample in a child process, `hz` readings per second
    (0: as fast as it goes)."""

    def __init__(self, device: int = 0, hz: float = DEFAULT_HZ) -> None:
        self.device = device
        self.hz = hz
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).resolve()), "--sample",
                                      str(self.device), "--hz", str(self.hz)], stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"memory sampler did not start (said {line!r})")

    def stop(self) -> tuple[int, int, float]:
        """(largest reading, number of readings, seconds sampled)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        data = json.loads(out.strip().splitlines()[-1])
        return int(data["max_used"]), int(data["samples"]), float(data["seconds"])


def _sample(device: int, hz: float) -> int:
    meter = DeviceMemory(device)
    period = 1.0 / hz if hz > 0 else 0.0
    stop = False

    def on_term(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    peak = meter.used()
    samples = 1
    used = meter.used
    t0 = time.perf_counter()
    print("ready", flush=True)
    next_t = t0
    while not stop:
        u = used()
        samples += 1
        if u > peak:
            peak = u
        if period:
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.perf_counter()
        elif samples % 8 == 0:
            time.sleep(0.0001)  # leave the CPU some room; still several kHz
    print(json.dumps({"max_used": peak, "samples": samples, "seconds": time.perf_counter() - t0}),
          flush=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, metavar="DEVICE", required=True)
    ap.add_argument("--hz", type=float, default=DEFAULT_HZ,
                    help="readings per second (0: as fast as it goes; default %(default)s)")
    a = ap.parse_args()
    sys.exit(_sample(a.sample, a.hz))
