"""vmmalloc under PyTorch: the allocator adapter, mem_pool(), workspaces and
the vLLM-style example. Each test runs a scenario of scenarios.py in a
process of its own (see conftest.py); the claims of docs/pytorch.md point
here."""

from __future__ import annotations

import pytest

from conftest import REPO, _report, run_child


def test_training_losses_match_pytorch_allocator(scenario):
    ours = scenario("train", "vmmalloc")
    ref = scenario("train", "torch")
    assert ours["backend"] == "vmmalloc" and ref["backend"] == "native"
    assert len(ours["losses"]) == len(ref["losses"]) == 8
    for a, b in zip(ours["losses"], ref["losses"]):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), (ours["losses"], ref["losses"])


def test_memory_stats_follow_allocations(scenario):
    r = scenario("stats")
    assert r["reserved"] >= r["allocated"] > 0


def test_record_stream_keeps_block_from_reuse(scenario):
    scenario("record_stream")


def test_cuda_graph_capture_and_replay(scenario):
    r = scenario("graphs")
    assert len(r["losses_graph"]) == 5


def test_out_of_memory_raises_and_process_recovers(scenario):
    r = scenario("oom")
    assert "vmmalloc" in r["message"]


def test_install_after_allocation_is_refused(scenario):
    scenario("install_after_allocation")


def test_install_after_cuda_init_without_allocation(scenario):
    assert scenario("install_after_init")["backend"] == "vmmalloc"


def test_mem_pool_scope(scenario):
    r = scenario("mem_pool")
    assert r["inside"] >= 64 << 20


def test_multiprocessing_sharing_is_refused_clearly(scenario):
    scenario("ipc")


def test_empty_cache_does_not_wait_for_gpu(scenario):
    r = scenario("empty_cache_no_wait")
    assert r["empty_cache_ms"] < 50


def test_pytorch_allocator_settings_leave_vmmalloc_serving(scenario):
    scenario("allocator_settings")


def test_unsupported_features_fail_clearly(scenario):
    r = scenario("unsupported")
    assert len(r["messages"]) == 2


@pytest.mark.parametrize("install", ["0", "1"], ids=["without-install", "with-install"])
def test_workspace_tensors_survive_growth(scenario, install):
    r = scenario("workspace_keeps_tensors", install)
    assert r["snapshot_keys"], "vmmalloc.torch.snapshot() gave an empty document"


@pytest.mark.parametrize("install", ["0", "1"], ids=["without-install", "with-install"])
def test_workspace_grows_while_kernel_runs(scenario, install):
    r = scenario("workspace_grow_during_kernel", install)
    assert r["grow_ms"] < 100 and r["shrink_ms"] < 100


@pytest.mark.parametrize("install", [[], ["--install"]], ids=["without-install", "with-install"])
def test_vllm_workspace_example(adapter_built, install):
    proc = run_child([str(REPO / "examples" / "vllm_workspace.py"), *install], timeout=600)
    assert proc.returncode == 0, _report(proc)
    assert "replay after growth: correct at the same address" in proc.stdout, _report(proc)
