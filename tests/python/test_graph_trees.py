"""CUDA-graph trees, MemPool and memory limits under install() (docs/pytorch.md):
torch.compile(mode="reduce-overhead") records, checkpoints and restores its
graph pool through vmmalloc and computes what it computes with PyTorch's
allocator; set_per_process_memory_fraction caps vmmalloc at run time. Each
scenario runs in a fresh process (graph_scenarios.py)."""

from __future__ import annotations

import pytest


def graph_scenario(scenario, name: str, *args: str) -> dict:
    return scenario(name, *args, script="graph_scenarios.py", timeout=900)


def test_reduce_overhead_matches_pytorch_allocator(scenario):
    """Two batch sizes make two graphs in one tree (its pool checkpointed and
    restored between them), then compiled training steps: the outputs and
    losses are PyTorch's own, and vmmalloc served every capture."""
    ours = graph_scenario(scenario, "reduce_overhead", "vmmalloc")
    ref = graph_scenario(scenario, "reduce_overhead", "torch")
    assert ours["backend"] == "vmmalloc" and ref["backend"] == "native"
    assert ours["captures"] == ref["captures"] >= 3, (ours["captures"], ref["captures"])
    assert ours["outputs"] == pytest.approx(ref["outputs"], rel=1e-5, abs=1e-4)
    assert ours["losses"] == pytest.approx(ref["losses"], rel=1e-5, abs=1e-6)


def test_memory_fraction_caps_vmmalloc_at_run_time(scenario):
    """As PyTorch's test_set_per_process_memory_fraction: a request over the
    cap raises torch.OutOfMemoryError with PyTorch's sentence, what fits is
    served, an invalid fraction is refused, lifting the cap serves again."""
    r = graph_scenario(scenario, "memory_fraction")
    assert "vmmalloc" in r["message"]


def test_mem_pool_with_install(scenario):
    """torch.cuda.MemPool() is a vmmalloc pool: use_mem_pool, use counts,
    memory kept for the pool and handed back on deletion, use_on_oom, and a
    graph captured into it."""
    r = graph_scenario(scenario, "mem_pool_installed")
    assert r["reserved_after"] < r["reserved_with_pool"]
