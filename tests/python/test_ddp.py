"""PyTorch DDP (NCCL) with vmmalloc installed on every rank: the same losses
as PyTorch's own allocator, NCCL works on vmmalloc's memory, and the ranks'
tensors come from vmmalloc (docs/multi_gpu.md). Needs 2 GPUs: skipped with
fewer."""

from __future__ import annotations

import json

import pytest

from conftest import HERE, _report, run_child


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


pytestmark = pytest.mark.skipif(_gpus() < 2, reason="needs 2 GPUs")


def _run(allocator: str, tmp_path) -> dict:
    out = tmp_path / f"{allocator}.json"
    proc = run_child(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                      str(HERE / "ddp_worker.py"), allocator, str(out)], timeout=600)
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"DDP with {allocator} failed:\n" + _report(proc), pytrace=False)
    return json.loads(out.read_text())


def test_ddp_on_two_gpus_matches_pytorch_allocator(adapter_built, tmp_path):
    ours = _run("vmmalloc", tmp_path)
    ref = _run("torch", tmp_path)
    assert ours["backend"] == "vmmalloc" and ref["backend"] == "native"
    assert ours["allreduce_ok"] and ref["allreduce_ok"]
    assert ours["served"] > 0
    assert len(ours["losses"]) == len(ref["losses"]) == 6
    for a, b in zip(ours["losses"], ref["losses"]):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), (ours["losses"], ref["losses"])
