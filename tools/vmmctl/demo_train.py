"""A small PyTorch training process on vmmalloc, for scripts/gpu_vmmctl_demo.sh:
`vmmctl ps`, `show`, `map`, `top` and `html` are pointed at it while it runs.

    PYTHONPATH=python python3 tools/vmmctl/demo_train.py [--seconds 120]

vmmalloc becomes PyTorch's CUDA allocator (vmmalloc.torch.install()); an MLP
is trained with AdamW on random data whose batch size changes every step
(so blocks of many sizes come and go), and a named workspace ("activations")
grows and shrinks with the batch. Prints "ready <pid>" after the first step,
then trains until --seconds pass or stdin closes.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time

import torch

import vmmalloc.torch as vt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()

    vt.install()
    torch.manual_seed(0)
    device = torch.device("cuda")
    width = 4096
    model = torch.nn.Sequential(
        torch.nn.Linear(1024, width), torch.nn.GELU(),
        torch.nn.Linear(width, width), torch.nn.GELU(),
        torch.nn.Linear(width, 1024),
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    workspace = vt.Workspace(8 << 30, name="activations")
    batches = [64, 256, 1024, 4096, 2048, 512]

    start = time.monotonic()
    step = 0
    while time.monotonic() - start < args.seconds:
        batch = batches[step % len(batches)]
        workspace.grow(batch * width * 4)
        x = torch.randn(batch, 1024, device=device)
        y = torch.randn(batch, 1024, device=device)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % len(batches) == len(batches) - 1:
            workspace.shrink(64 * width * 4)
        torch.cuda.synchronize()
        if step == 0:
            print(f"ready {os.getpid()}", flush=True)
        step += 1
        if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read(1):
            break  # stdin closed: stop
    print(f"trained {step} steps in {time.monotonic() - start:.1f} s, loss {loss.item():.4f}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
