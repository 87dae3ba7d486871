#!/usr/bin/env python3
"""bench/preload: the LD_PRELOAD interposer under PyTorch, one run.

The GPT-2 training workload of bench/torch_train.py (same model, schedule,
warm-up, timing and memory measurement; runs alternate, --runs of each, the
median tokens/s and the largest peak kept), for:

  torch-default     PyTorch's caching allocator, default settings
  torch-nocache     PYTORCH_NO_CUDA_MEMORY_CACHING=1: every tensor a
                    cudaMalloc, every free a cudaFree (which synchronizes)
  vmmalloc-preload  the same under LD_PRELOAD=libvmmalloc_preload.so
                    (VMMALLOC_CONF=print_stats:on; a run whose stderr has no
                    interposer summary fails: it did not go through vmmalloc)

    cmake --build build-gpu --target vmmalloc_preload
    python3 bench/preload.py --commit "$(git rev-parse HEAD)" \
        [--preload-lib build-gpu/preload/libvmmalloc_preload.so]

writes bench/results/preload.json (docs/benchmarks.md's results format, rows
as torch_train's)
once every run has finished. Target (docs/benchmarks.md, checked by
render_tables.py): vmmalloc-preload at least 0.95x torch-default's tokens/s,
with peak device memory at most torch-default's.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import torch_train  # noqa: E402

if __name__ == "__main__":
    sys.exit(torch_train.main(bench="preload", description=__doc__.splitlines()[0]))
