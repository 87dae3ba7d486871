#!/usr/bin/env python3
"""One rank of test_ddp.py's run, started by torch.distributed.run:
ddp_worker.py ALLOCATOR OUT. ALLOCATOR is "vmmalloc" (vmmalloc.torch.install()
before CUDA is used) or "torch". A small MLP in fp32, deterministic, trained
6 steps under DistributedDataParallel with NCCL on fixed per-rank data; rank
0 writes {"losses", "backend", "allreduce_ok", "served"} as JSON to OUT."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def main() -> int:
    allocator, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ["LOCAL_RANK"])
    world = int(os.environ["WORLD_SIZE"])
    if allocator == "vmmalloc":
        import vmmalloc.torch as vt

        vt.install()
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    dist.init_process_group("nccl", device_id=dev)

    # NCCL on memory from the allocator under test: a sum over the ranks.
    x = torch.full((1 << 20,), float(rank + 1), device=dev)
    dist.all_reduce(x)
    allreduce_ok = bool((x == world * (world + 1) / 2).all())

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                          nn.Linear(1024, 10)).to(dev)
    ddp = DistributedDataParallel(model, device_ids=[rank])
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    gen = torch.Generator(device="cpu").manual_seed(100 + rank)
    losses = []
    for step in range(6):
        batch = 32 * (1 + step % 3)  # changing shapes
        inputs = torch.randn(batch, 256, generator=gen).to(dev)
        target = torch.randint(0, 10, (batch,), generator=gen).to(dev)
        loss = nn.functional.cross_entropy(ddp(inputs), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        reduced = loss.detach().clone()
        dist.all_reduce(reduced)
        losses.append(float(reduced) / world)
    torch.cuda.synchronize()
    backend = torch.cuda.get_allocator_backend()
    served = 0
    if allocator == "vmmalloc":
        import vmmalloc.torch as vt

        served = int(vt.memory_stats(rank)["allocations"])
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"losses": losses, "backend": backend, "allreduce_ok": allreduce_ok,
                       "served": served}, f)
    elif not allreduce_ok:
        return 1
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
