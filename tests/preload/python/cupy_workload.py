#!/usr/bin/env python3
"""A CuPy workload with CuPy's memory pool disabled
(cupy.cuda.set_allocator(None): every array a cudaMalloc / cudaFree), its
results checked against NumPy. scripts/gpu_preload.sh runs it under
LD_PRELOAD=libvmmalloc_preload.so with print_stats:on, so the summary shows
the arrays came from vmmalloc.

Prints one "result:" line per check ("ok" or the error) and exits 1 if any
check failed, 77 without CuPy or a GPU.
"""

import sys

try:
    import cupy as cp
    import numpy as np
except ImportError as e:  # pragma: no cover
    print(f"no CuPy: skipped ({e})")
    sys.exit(77)


def main() -> int:
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no device")
    except Exception as e:  # noqa: BLE001
        print(f"no GPU: skipped ({e})")
        return 77
    cp.cuda.set_allocator(None)
    cp.cuda.set_pinned_memory_allocator(None)
    rng = np.random.default_rng(0)
    failures = 0

    def check(name: str, ok: bool, detail: str = "") -> None:
        nonlocal failures
        print(f"result: {name}: {'ok' if ok else 'FAILED ' + detail}", flush=True)
        failures += 0 if ok else 1

    a = rng.standard_normal((1024, 768), dtype=np.float32)
    b = rng.standard_normal((768, 512), dtype=np.float32)
    got = cp.asnumpy(cp.asarray(a) @ cp.asarray(b))
    check("matmul", np.allclose(got, a @ b, rtol=1e-3, atol=1e-3))

    x = rng.standard_normal(1 << 20) + 1j * rng.standard_normal(1 << 20)
    got = cp.asnumpy(cp.fft.fft(cp.asarray(x)))
    check("fft", np.allclose(got, np.fft.fft(x), rtol=1e-6, atol=1e-6))

    ints = rng.integers(0, 1 << 30, 5_000_000)
    check("sort", np.array_equal(cp.asnumpy(cp.sort(cp.asarray(ints))), np.sort(ints)))

    y = rng.standard_normal(3_000_000)
    z = rng.standard_normal(3_000_000)
    got = float(cp.sum(cp.sin(cp.asarray(y)) * cp.asarray(z)))
    check("elementwise+reduction", abs(got - float(np.sum(np.sin(y) * z))) < 1e-6 * 3_000_000)

    # Many arrays of changing sizes, some on a non-blocking stream.
    stream = cp.cuda.Stream(non_blocking=True)
    ok = True
    for i in range(300):
        n = int(rng.integers(1, 1 << 20))
        host = rng.standard_normal(n)
        if i % 3 == 0:
            with stream:
                dev = cp.asarray(host)
                result = cp.asnumpy(cp.cumsum(dev * 2.0))
                stream.synchronize()
        else:
            dev = cp.asarray(host)
            result = cp.asnumpy(cp.cumsum(dev * 2.0))
        ok = ok and np.allclose(result, np.cumsum(host * 2.0), rtol=1e-9, atol=1e-6)
        del dev
    check("300 arrays of changing sizes, two streams", ok)
    cp.cuda.Device().synchronize()
    print("cupy_workload: " + ("all checks passed" if failures == 0 else "FAILED"))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
