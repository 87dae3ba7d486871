#!/usr/bin/env bash
# One device call, several GPU scripts: runs the named stages in order on the
# GPU machine, each with its own results folder, and after every stage tars
# all of them into $OUT/gpu_session.tgz (so a call cut off by the device's
# time limit still brings back what finished). The device returns at most 8
# files a call; the scripts below write more than that between them.
#
# Usage: COMMIT=<sha> scripts/gpu_session.sh STAGE...
#   suite        scripts/gpu_suite.sh STEPS=ctest (every test, pytest included:
#                over 4.5 min on the x2; give it a call of its own)
#   gpu-quick    only the GPU C++ cases: vmm_gpu_tests and ctest '^preload:'
#                (about 1 min with the build)
#   sanitizers   scripts/gpu_suite.sh STEPS=memcheck,racecheck,synccheck
#   reliability  scripts/gpu_reliability.sh (ctest + figures; reliability-figures: figures only)
#   preload      scripts/gpu_preload.sh (preload-ctest: its build and ctest only)
#   vmmctl       scripts/gpu_vmmctl_demo.sh --bench
#   latency      bench/alloc_latency.sh (all systems, torch-caching included)
#   replay       bench/replay.py over every trace
#   growth       bench/workspace_growth
#   torch        scripts/gpu_torch.sh (tests, both benchmarks, pip check)
#   torch-bench  scripts/gpu_torch.sh, the two benchmarks only (~9 min since
#                torch_train times 60 steps: give it a call of its own)
#   preload-bench  bench/preload.py (PyTorch under the interposer; several minutes:
#                15 runs of 60 timed steps, torch-nocache's slow)
#   preload-fence  bench/preload.py with cudafree:fence (not the default), to $OUT only
#   multi        scripts/gpu_multi.sh (needs 2 GPUs)
#   ddp          bench/ddp_train.py (needs 2 GPUs)
#   sleep-bench  the adapter built, tests/python/test_sleep.py, then bench/sleep_wake.py
#                (16 GiB live) and bench/rl_colocate.py (a few minutes)
#   torch-tests  the adapter built, then tests/python/test_graph_trees.py and
#                test_torch.py (pytest)
#   compile-bench  the adapter built, then bench/torch_compile.py (GPT-2 small,
#                reduce-overhead; 9 runs)
#   diagnose     the adapter built, then bench/diagnostics/memory_speed.py
#                and bench/diagnostics/handle_cost.py (~2 min)
# Environment: COMMIT (required: the device's copy has no .git), JOBS, and
# LIMIT_S: the seconds the whole call may take (e.g. 570 under the device's
# 600 s limit). Each stage is then stopped (timeout, its process group
# killed) 15 s before that, and a stage that would start with under 30 s left
# is skipped, so the results tarball always holds every finished stage.
set -uo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$VMM_ROOT" || exit 2
: "${COMMIT:?set COMMIT to the commit the tree is}"
export COMMIT
vmm_gpu_env
export JOBS VMM_JOBS
# The start of a stage's command (bash -c) that configures build-gpu and
# builds the targets written after it.
GPU_BUILD='source scripts/common.sh && vmm_gpu_env && vmm_gpu_configure build-gpu >/dev/null &&
  vmm_build build-gpu --target'
STAGING=$(mktemp -d "${TMPDIR:-/tmp}/gpu_session.XXXXXX")
FINAL=${OUT:-$STAGING}
STATUS=0

pack() {
  vmm_tar_out gpu_session.tgz -C "$STAGING" .
}

run_stage() {  # run_stage NAME COMMAND...: output in NAME/console.log
  local name=$1
  shift
  local dir="$STAGING/$name"
  mkdir -p "$dir"
  local t0=$SECONDS
  local limit=()
  if [ -n "${LIMIT_S:-}" ]; then
    local left=$((LIMIT_S - SECONDS - 15))
    if [ "$left" -lt 30 ]; then
      echo "$name: skipped, ${left} s left of LIMIT_S=$LIMIT_S" | tee -a "$STAGING/stages.txt"
      STATUS=1
      pack
      return
    fi
    limit=(timeout -k 5 "$left")
  fi
  echo "=== stage $name: $*"
  OUT="$dir" "${limit[@]}" "$@" >"$dir/console.log" 2>&1
  local rc=$?
  [ "$rc" -eq 124 ] && echo "(stopped by LIMIT_S after $((SECONDS - t0)) s)" >>"$dir/console.log"
  echo "$name: exit $rc, $((SECONDS - t0)) s" | tee -a "$STAGING/stages.txt"
  tail -n 15 "$dir/console.log"
  [ "$rc" -eq 0 ] || STATUS=1
  pack
}

# The stage commands are single-quoted on purpose: $COMMIT, $OUT and $JOBS
# expand in the stage's own bash -c, with run_stage's OUT.
# shellcheck disable=SC2016
for stage in "$@"; do
  case "$stage" in
    suite) run_stage suite env STEPS=ctest scripts/gpu_suite.sh ;;
    gpu-quick)
      run_stage gpu-quick bash -c "$GPU_BUILD"' vmm_gpu_tests vmmalloc_preload \
          vmm_preload_check_shared vmm_preload_check_static vmm_preload_host_test \
          vmm_preload_inert_test vmm_preload_local_runtime_test >/dev/null &&
        build-gpu/tests/vmm_gpu_tests && ctest --test-dir build-gpu -R "^preload:" --output-on-failure' ;;
    sanitizers) run_stage sanitizers env STEPS=memcheck,racecheck,synccheck scripts/gpu_suite.sh ;;
    reliability) run_stage reliability scripts/gpu_reliability.sh ;;
    reliability-figures) run_stage reliability-figures env STEPS=build,figures scripts/gpu_reliability.sh ;;
    preload) run_stage preload scripts/gpu_preload.sh ;;
    preload-ctest) run_stage preload-ctest env STEPS=build,ctest scripts/gpu_preload.sh ;;
    vmmctl) run_stage vmmctl env BUILD=build-gpu scripts/gpu_vmmctl_demo.sh --bench ;;
    latency)
      run_stage latency bash -c 'bench/alloc_latency.sh "$COMMIT" && cp bench/results/alloc_latency.json "$OUT/"' ;;
    replay)
      run_stage replay bash -c "$GPU_BUILD"' vmm_replay >/dev/null &&
        python3 bench/replay.py --vmm-replay build-gpu/tools/vmm_replay --commit "$COMMIT" &&
        cp bench/results/replay.json "$OUT/"' ;;
    growth)
      run_stage growth bash -c 'scripts/gpu_bench.sh "$COMMIT" workspace_growth &&
        cp bench/results/workspace_growth.json "$OUT/"' ;;
    torch)
      run_stage torch bash -c 'scripts/gpu_torch.sh "$COMMIT"; rc=$?;
        cp bench/results/torch_workspace.json bench/results/torch_train.json "$OUT/" 2>/dev/null; exit $rc' ;;
    torch-bench)
      run_stage torch-bench bash -c 'scripts/gpu_torch.sh "$COMMIT" bench-workspace bench-train; rc=$?;
        cp bench/results/torch_workspace.json bench/results/torch_train.json "$OUT/" 2>/dev/null; exit $rc' ;;
    preload-bench)
      run_stage preload-bench bash -c "$GPU_BUILD"' vmmalloc_preload vmmalloc >/dev/null &&
        python3 bench/preload.py --commit "$COMMIT" && cp bench/results/preload.json "$OUT/"' ;;
    preload-fence)
      run_stage preload-fence bash -c "$GPU_BUILD"' vmmalloc_preload vmmalloc >/dev/null &&
        python3 bench/preload.py --commit "$COMMIT" --vmmalloc-conf cudafree:fence \
          --out "$OUT/preload_fence.json"' ;;
    multi) run_stage multi scripts/gpu_multi.sh ;;
    ddp)
      run_stage ddp bash -c 'python3 bench/ddp_train.py --commit "$COMMIT" &&
        cp bench/results/ddp_train.json "$OUT/"' ;;
    diagnose)
      run_stage diagnose bash -c 'scripts/gpu_torch.sh "$COMMIT" build >/dev/null &&
        export VMMALLOC_LIBRARY_DIR=$PWD/build-gpu-torch/allocator \
          VMMALLOC_TORCH_BUILD_DIR=$PWD/build-gpu-torch/torch-extension PYTHONPATH=$PWD/python &&
        python3 bench/diagnostics/memory_speed.py --rounds 2 &&
        python3 bench/diagnostics/handle_cost.py --sizes 2,16,512,1024 --reps 15' ;;
    torch-tests)
      run_stage torch-tests bash -c 'scripts/gpu_torch.sh "$COMMIT" build >/dev/null &&
        export VMMALLOC_LIBRARY_DIR=$PWD/build-gpu-torch/allocator \
          VMMALLOC_TORCH_BUILD_DIR=$PWD/build-gpu-torch/torch-extension PYTHONPATH=$PWD/python &&
        python3 -m pytest -q tests/python/test_graph_trees.py tests/python/test_torch.py' ;;
    compile-bench)
      run_stage compile-bench bash -c 'scripts/gpu_torch.sh "$COMMIT" build >/dev/null &&
        export VMMALLOC_LIBRARY_DIR=$PWD/build-gpu-torch/allocator \
          VMMALLOC_TORCH_BUILD_DIR=$PWD/build-gpu-torch/torch-extension PYTHONPATH=$PWD/python &&
        python3 bench/torch_compile.py --commit "$COMMIT" --out "$OUT/torch_compile.json"' ;;
    sleep-bench)
      run_stage sleep-bench bash -c 'scripts/gpu_torch.sh "$COMMIT" build >/dev/null &&
        export VMMALLOC_LIBRARY_DIR=$PWD/build-gpu-torch/allocator \
          VMMALLOC_TORCH_BUILD_DIR=$PWD/build-gpu-torch/torch-extension PYTHONPATH=$PWD/python &&
        { python3 -m pytest -q tests/python/test_sleep.py; t=$?; } &&
        python3 bench/sleep_wake.py --commit "$COMMIT" --out "$OUT/sleep_wake.json" &&
        python3 bench/rl_colocate.py --commit "$COMMIT" --out "$OUT/rl_colocate.json" && exit $t' ;;
    *) echo "gpu_session.sh: unknown stage '$stage'" >&2; STATUS=2 ;;
  esac
done
echo "=== stages"
cat "$STAGING/stages.txt" 2>/dev/null
[ -z "${OUT:-}" ] && echo "results: $FINAL"
exit "$STATUS"
