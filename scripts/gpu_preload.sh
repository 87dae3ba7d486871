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

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
BUILD="$ROOT/build-gpu-preload"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
CUDA_ARCH=${CUDA_ARCH:-90}
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-build,ctest,torch,cupy}
export PATH="$PATH:/usr/local/cuda/bin"
want() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_preload_logs.XXXXXX")
SUMMARY="$LOGS/summary.txt"
PRELOAD="$BUILD/preload/libvmmalloc_preload.so"
FAILED=0
declare -a RESULTS=()

# step NAME COMMAND...: runs COMMAND with its output in $LOGS/NAME.log (a
# tail of it on the console) and records the outcome.
step() {
  local name=$1
  shift
  local log="$LOGS/$name.log"
  local start=$SECONDS
  echo "=== $name: $*"
  "$@" >"$log" 2>&1
  local rc=$?
  tail -n 30 "$log"
  if [ "$rc" -eq 0 ]; then
    RESULTS+=("PASS  $name ($((SECONDS - start))s)")
  else
    RESULTS+=("FAIL  $name (rc $rc, $((SECONDS - start))s, see $name.log)")
    FAILED=1
  fi
  return "$rc"
}

note_failure() {
  RESULTS+=("FAIL  $1")
  FAILED=1
}

# served LOG: the interposer's served_allocations count in LOG (0 if none).
served() {
  local n
  n=$(grep -o 'served_allocations=[0-9]*' "$1" | tail -n 1 | cut -d= -f2)
  echo "${n:-0}"
}

finish() {
  {
    echo "vmmalloc LD_PRELOAD interposer on the GPU, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit: ${COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1 || echo none)"
    printf '%s\n' "${RESULTS[@]}"
    if [ "$FAILED" -eq 0 ]; then echo "RESULT: all steps passed"; else echo "RESULT: FAILED"; fi
  } >"$SUMMARY"
  echo
  echo "===================== summary ====================="
  cat "$SUMMARY"
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    tar -czf "$OUT/gpu_preload_logs.tgz" -C "$LOGS" . && echo "logs: $OUT/gpu_preload_logs.tgz"
    cp "$SUMMARY" "$OUT/gpu_preload_summary.txt"
  else
    echo "logs: $LOGS"
  fi
  exit "$FAILED"
}

{
  echo "# nvidia-smi"; nvidia-smi 2>&1
  echo "# nvcc"; nvcc --version 2>&1
  echo "# python"; "$PYTHON" -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' 2>&1
  "$PYTHON" -c 'import cupy; print("cupy", cupy.__version__)' 2>&1
} >"$LOGS/environment.log"
GPU_VISIBLE=0
nvidia-smi -L >/dev/null 2>&1 && GPU_VISIBLE=1
[ "$GPU_VISIBLE" -eq 1 ] || note_failure "no GPU visible (nvidia-smi -L failed)"

# ------------------------------------------------------------ build
if want build; then
  GENERATOR=()
  if [ ! -f "$BUILD/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then GENERATOR=(-G Ninja); fi
  step configure cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
    -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" \
    -DVMMALLOC_BUILD_BENCH=OFF || finish
  step build cmake --build "$BUILD" -j "$JOBS" --target vmmalloc_preload \
    vmm_preload_check_shared vmm_preload_check_static vmm_preload_host_test \
    vmm_preload_inert_test vmm_preload_local_runtime_test || finish
fi
[ -f "$PRELOAD" ] || { note_failure "no interposer at $PRELOAD"; finish; }

# ------------------------------------------------------------ ctest
if want ctest; then
  step ctest timeout 240 ctest --test-dir "$BUILD" -R '^preload:' -V -j 1 \
    --output-junit "$LOGS/ctest_junit.xml"
  if [ "$GPU_VISIBLE" -eq 1 ]; then
    skipped=$(grep -cE '^[[:space:]]*[0-9]+ - preload: gpu.*\((Skipped|Not Run)\)' "$LOGS/ctest.log" || true)
    [ "$skipped" -eq 0 ] || note_failure "ctest: $skipped preload GPU case(s) skipped although a GPU is visible"
  fi
fi

# ------------------------------------------------------------ PyTorch
TORCH="$ROOT/tests/preload/python/torch_training.py"
COMPARE="$ROOT/tests/preload/python/compare_results.py"
if want torch; then
  step torch-default timeout 120 env -u LD_PRELOAD "$PYTHON" "$TORCH"
  step torch-nocache timeout 120 env -u LD_PRELOAD PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$PYTHON" "$TORCH"
  step torch-nocache-preload timeout 120 env LD_PRELOAD="$PRELOAD" VMMALLOC_CONF=print_stats:on \
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$PYTHON" "$TORCH"
  step torch-compare "$PYTHON" "$COMPARE" "$LOGS/torch-nocache.log" "$LOGS/torch-nocache-preload.log"
  n=$(served "$LOGS/torch-nocache-preload.log")
  if [ "$n" -ge 1000 ]; then
    RESULTS+=("PASS  torch: vmmalloc served $n allocations")
  else
    note_failure "torch: vmmalloc served $n allocations (expected every tensor: >= 1000)"
  fi
fi

# ------------------------------------------------------------ CuPy
if want cupy; then
  step cupy-preload timeout 120 env LD_PRELOAD="$PRELOAD" VMMALLOC_CONF=print_stats:on \
    "$PYTHON" "$ROOT/tests/preload/python/cupy_workload.py"
  n=$(served "$LOGS/cupy-preload.log")
  if [ "$n" -ge 300 ]; then
    RESULTS+=("PASS  cupy: vmmalloc served $n allocations")
  else
    note_failure "cupy: vmmalloc served $n allocations (expected every array: >= 300)"
  fi
fi

finish
