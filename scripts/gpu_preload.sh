#!/usr/bin/env bash
# The LD_PRELOAD interposer on a GPU machine (docs/preload.md), from the
# repository root (or anywhere: it cds there):
#
#   1. configure and build the interposer and its test programs into
#      build-gpu-preload (sm_90 by default)
#   2. ctest -R '^preload:': the host cases and the GPU cases (the CUDA
#      program built with the shared and with the static runtime, with and
#      without the interposer; a kernel still running at cudaFree;
#      cudaDeviceReset; misuse). GPU cases must RUN here, not skip.
#   3. PyTorch: tests/preload/python/torch_training.py with
#      PYTORCH_NO_CUDA_MEMORY_CACHING=1, without and with the interposer:
#      the same losses, and the interposer's print_stats summary showing the
#      allocations went through vmmalloc. The caching allocator's run is
#      logged for reference (tokens/s).
#   4. CuPy: tests/preload/python/cupy_workload.py (pool disabled) under the
#      interposer: results checked against NumPy, and the summary showing
#      the allocations went through vmmalloc.
#
# Logs: $OUT/gpu_preload_logs.tgz and $OUT/gpu_preload_summary.txt where OUT
# is set (the device tool), else printed paths. Exits non-zero if any step
# failed. Environment: JOBS (default nproc), CUDA_ARCH (default 90), PYTHON
# (default python3), STEPS (comma list of build,ctest,torch,cupy; default all).
set -u
set -o pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$VMM_ROOT" || exit 2
ROOT=$VMM_ROOT
BUILD="$ROOT/build-gpu-preload"
vmm_gpu_env
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-build,ctest,torch,cupy}

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_preload_logs.XXXXXX")
vmm_steps_init "$LOGS"
PRELOAD="$BUILD/preload/libvmmalloc_preload.so"

# served LOG: the interposer's served_allocations count in LOG (0 if none).
served() {
  local n
  n=$(grep -o 'served_allocations=[0-9]*' "$1" | tail -n 1 | cut -d= -f2)
  echo "${n:-0}"
}

finish() {
  vmm_step_report "$LOGS/summary.txt" \
    "vmmalloc LD_PRELOAD interposer on the GPU, $(vmm_utc_now)" name,driver_version,memory.total 1
  vmm_ship_logs gpu_preload_logs.tgz gpu_preload_summary.txt "$LOGS/summary.txt"
  exit "$VMM_STEP_FAILED"
}

{
  echo "# nvidia-smi"; nvidia-smi 2>&1
  echo "# nvcc"; nvcc --version 2>&1
  echo "# python"; "$PYTHON" -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' 2>&1
  "$PYTHON" -c 'import cupy; print("cupy", cupy.__version__)' 2>&1
} >"$LOGS/environment.log"
GPU_VISIBLE=0
nvidia-smi -L >/dev/null 2>&1 && GPU_VISIBLE=1
[ "$GPU_VISIBLE" -eq 1 ] || vmm_step_fail "no GPU visible (nvidia-smi -L failed)"

# ------------------------------------------------------------ build
if vmm_want build; then
  GENERATOR=()
  if [ ! -f "$BUILD/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then GENERATOR=(-G Ninja); fi
  vmm_step configure vmm_gpu_configure "$BUILD" "${GENERATOR[@]}" -DVMMALLOC_BUILD_BENCH=OFF || finish
  vmm_step build cmake --build "$BUILD" -j "$JOBS" --target vmmalloc_preload \
    vmm_preload_check_shared vmm_preload_check_static vmm_preload_host_test \
    vmm_preload_inert_test vmm_preload_local_runtime_test || finish
fi
[ -f "$PRELOAD" ] || { vmm_step_fail "no interposer at $PRELOAD"; finish; }

# ------------------------------------------------------------ ctest
if vmm_want ctest; then
  vmm_step ctest timeout 240 ctest --test-dir "$BUILD" -R '^preload:' -V -j 1 \
    --output-junit "$LOGS/ctest_junit.xml"
  if [ "$GPU_VISIBLE" -eq 1 ]; then
    skipped=$(grep -cE '^[[:space:]]*[0-9]+ - preload: gpu.*\((Skipped|Not Run)\)' "$LOGS/ctest.log" || true)
    [ "$skipped" -eq 0 ] || vmm_step_fail "ctest: $skipped preload GPU case(s) skipped although a GPU is visible"
  fi
fi

# ------------------------------------------------------------ PyTorch
TORCH="$ROOT/tests/preload/python/torch_training.py"
COMPARE="$ROOT/tests/preload/python/compare_results.py"
if vmm_want torch; then
  vmm_step torch-default timeout 120 env -u LD_PRELOAD "$PYTHON" "$TORCH"
  vmm_step torch-nocache timeout 120 env -u LD_PRELOAD PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$PYTHON" "$TORCH"
  vmm_step torch-nocache-preload timeout 120 env LD_PRELOAD="$PRELOAD" VMMALLOC_CONF=print_stats:on \
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$PYTHON" "$TORCH"
  vmm_step torch-compare "$PYTHON" "$COMPARE" "$LOGS/torch-nocache.log" "$LOGS/torch-nocache-preload.log"
  n=$(served "$LOGS/torch-nocache-preload.log")
  if [ "$n" -ge 1000 ]; then
    vmm_step_pass "torch: vmmalloc served $n allocations"
  else
    vmm_step_fail "torch: vmmalloc served $n allocations (expected every tensor: >= 1000)"
  fi
fi

# ------------------------------------------------------------ CuPy
if vmm_want cupy; then
  vmm_step cupy-preload timeout 120 env LD_PRELOAD="$PRELOAD" VMMALLOC_CONF=print_stats:on \
    "$PYTHON" "$ROOT/tests/preload/python/cupy_workload.py"
  n=$(served "$LOGS/cupy-preload.log")
  if [ "$n" -ge 300 ]; then
    vmm_step_pass "cupy: vmmalloc served $n allocations"
  else
    vmm_step_fail "cupy: vmmalloc served $n allocations (expected every array: >= 300)"
  fi
fi

finish
