#!/usr/bin/env python3
"""Sleep and wake under PyTorch (docs/sleep.md), each scenario in a fresh
process (vmmalloc.torch.install() first):
    python tests/python/sleep_scenarios.py NAME [ARG...]
Prints ``RESULT {json}`` as its last line; exit 0 means its checks passed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

import vmmalloc.torch as vt
from scenarios import deterministic, main, result, sleep_ms, small_transformer

MIB = 1 << 20


def tensors() -> None:
    """Offloaded tensors keep their bytes and addresses; discarded ones their
    addresses; untagged ones are untouched; the freed memory is usable by
    another process while asleep; allocating under a sleeping tag fails."""
    vt.install()
    with vt.tag("weights"):
        w = [torch.randn(n, device="cuda") for n in (1000, 300_000, 64 * MIB // 4, 256 * MIB // 4)]
        spare = torch.empty(512 * MIB, dtype=torch.uint8, device="cuda")
    del spare  # freed, cached under the tag: released by sleep too
    with vt.tag("kv_cache"):
        kv = torch.ones(256 * MIB // 4, device="cuda")
    plain = torch.full((32 * MIB // 4,), 3.0, device="cuda")
    ref = [t.clone().cpu() for t in w]
    ptrs = [t.data_ptr() for t in w] + [kv.data_ptr()]
    sleep_ms(100)  # work still queued on the tensors' stream: sleep waits for it
    free0, _ = torch.cuda.mem_get_info()
    r1 = vt.sleep("weights", "offload")
    r2 = vt.sleep("kv_cache", "discard")
    free1, _ = torch.cuda.mem_get_info()
    assert vt.is_sleeping("weights") and vt.is_sleeping("kv_cache")
    freed = free1 - free0
    tagged = sum(t.numel() * 4 for t in w) + 512 * MIB + kv.numel() * 4
    assert freed >= tagged, (freed, tagged)
    assert r1["copied_bytes"] >= sum(t.numel() * 4 for t in w) and r2["copied_bytes"] == 0
    try:
        with vt.tag("weights"):
            torch.empty(MIB, device="cuda")
        raise AssertionError("allocating under a sleeping tag succeeded")
    except ValueError as e:
        assert "asleep" in str(e), e
    # Another process takes most of the memory the sleep freed, then exits.
    take = (freed - 256 * MIB) // MIB
    child = subprocess.run([sys.executable, "-c",
                            "import torch,sys; t=torch.empty(int(sys.argv[1])<<20, dtype=torch.uint8,"
                            " device='cuda'); t.fill_(1); torch.cuda.synchronize(); print('ok')",
                            str(take)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0 and "ok" in child.stdout, child.stderr[-2000:]
    assert torch.equal(plain, torch.full_like(plain, 3.0))
    vt.wake(["weights", "kv_cache"])
    assert not vt.is_sleeping("weights")
    assert [t.data_ptr() for t in w] + [kv.data_ptr()] == ptrs
    for t, c in zip(w, ref):
        assert torch.equal(t.cpu(), c)
    kv.fill_(2.0)  # discarded: the caller refills
    assert float(kv.sum()) == 2.0 * kv.numel()
    result(freed=freed, tagged=tagged, other_process_mib=take, copied=r1["copied_bytes"])


def graph() -> None:
    """A CUDA graph captured under a tag replays after sleep and wake with
    refilled inputs, without recapture, and matches eager execution."""
    vt.install()
    deterministic()
    with vt.tag("weights"):
        model = small_transformer().cuda().eval()
    static_in = torch.randint(0, 512, (8, 64), device="cuda")
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                model(static_in)  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with vt.tag("graph"):
            with torch.cuda.graph(g):
                static_out = model(static_in)
    outs = []
    for step in range(3):
        vt.sleep(["weights", "graph"], "offload") if step % 2 == 0 else vt.sleep(level=1)
        vt.wake(["weights", "graph"])
        x = torch.randint(0, 512, (8, 64), device="cuda", generator=None)
        static_in.copy_(x)
        g.replay()
        with torch.no_grad():
            eager = model(x)
        assert torch.allclose(static_out, eager, atol=1e-4, rtol=1e-4), (static_out - eager).abs().max()
        outs.append(float(static_out.float().abs().sum()))
    result(replays=len(outs))


def train(sleeping: str) -> None:
    """Training steps with the weights and optimizer state tagged; with
    'yes', sleep(offload) and wake between every step: same losses."""
    vt.install()
    deterministic()
    vocab = 512
    with vt.tag("weights"):
        model = small_transformer(vocab).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for step in range(6):
        tokens = torch.randint(0, vocab, (8, 65), generator=gen).cuda()
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with vt.tag("weights"):
            opt.step()  # the optimizer's state is made at the first step: tagged
        losses.append(loss.item())
        if sleeping == "yes":
            vt.sleep("weights")
            vt.wake("weights", keep_host=True)
    result(losses=losses)


SCENARIOS = {f.__name__: f for f in (tensors, graph, train)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], SCENARIOS, "sleep_scenarios.py"))
