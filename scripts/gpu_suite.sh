#!/usr/bin/env bash
# The GPU suite, run on the GPU machine from the repository root (or from
# anywhere: it cds there):
#
#   1. configure and build everything into build-gpu (sm_90, -lineinfo)
#   2. ctest --output-on-failure: every test; the GPU cases must RUN here,
#      so a GPU case reported skipped while a GPU is visible is a failure
#   3. the GPU test binary under compute-sanitizer memcheck (all cases)
#   4. the GPU kernel cases ([gpu]) under racecheck and synccheck
#
# Every step's output goes to a log; when OUT is set the logs are tarred
# into $OUT/gpu_suite_logs.tgz and the summary is copied to
# $OUT/gpu_suite_summary.txt (nothing else is written to $OUT). The script
# keeps going after a failed step and exits non-zero if any step failed.
# Environment: COMMIT (the commit to print; a device's copy of the tree may
# carry no current .git), JOBS (build parallelism, default nproc), CUDA_ARCH (default 90),
# STEPS (comma list of ctest,memcheck,racecheck,synccheck; default all: the
# device allows 10 minutes a call, so a suite may be split over two calls
# on one warm machine - the build in build-gpu is reused).
set -u
set -o pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
BUILD="$ROOT/build-gpu"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
CUDA_ARCH=${CUDA_ARCH:-90}
export PATH="$PATH:/usr/local/cuda/bin"

STEPS=${STEPS:-ctest,memcheck,racecheck,synccheck}
want() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_suite_logs.XXXXXX")
SUMMARY="$LOGS/summary.txt"
FAILED=0
declare -a RESULTS=()

# step NAME COMMAND...: runs COMMAND, output to $LOGS/NAME.log (and a tail of
# it to the console), and records the outcome and duration.
step() {
  local name=$1
  shift
  local log="$LOGS/$name.log"
  local start=$SECONDS
  echo "=== $name: $*"
  "$@" >"$log" 2>&1
  local rc=$?
  local took=$((SECONDS - start))
  tail -n 25 "$log"
  if [ "$rc" -eq 0 ]; then
    RESULTS+=("PASS  $name (${took}s)")
  else
    RESULTS+=("FAIL  $name (rc $rc, ${took}s, see $name.log)")
    FAILED=1
  fi
  return "$rc"
}

# note TEXT: a failure found by inspecting a step's output.
note_failure() {
  RESULTS+=("FAIL  $1")
  FAILED=1
}

finish() {
  {
    echo "vmmalloc GPU suite, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    # COMMIT names the tree's commit where the copy has no (current) .git.
    if [ -n "${COMMIT:-}" ]; then
      echo "commit: $COMMIT"
    else
      echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        "$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo '(dirty tree)')"
    fi
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1 || echo none)"
    printf '%s\n' "${RESULTS[@]}"
    if [ "$FAILED" -eq 0 ]; then echo "RESULT: all steps passed"; else echo "RESULT: FAILED"; fi
  } >"$SUMMARY"
  echo
  echo "===================== summary ====================="
  cat "$SUMMARY"
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    local tag=${STEPS//,/-}
    tar -czf "$OUT/gpu_suite_logs-$tag.tgz" -C "$LOGS" . && echo "logs: $OUT/gpu_suite_logs-$tag.tgz"
    cp "$SUMMARY" "$OUT/gpu_suite_summary-$tag.txt"
  else
    echo "logs: $LOGS"
  fi
  exit "$FAILED"
}

# ------------------------------------------------------------ environment
{
  echo "# nvidia-smi"; nvidia-smi 2>&1
  echo "# nvcc"; nvcc --version 2>&1
  echo "# compute-sanitizer"; compute-sanitizer --version 2>&1
  echo "# cmake"; cmake --version 2>&1
  echo "# c++"; c++ --version 2>&1
} >"$LOGS/environment.log"
GPU_VISIBLE=0
nvidia-smi -L >/dev/null 2>&1 && GPU_VISIBLE=1

# ------------------------------------------------------------ build
CONFIGURED=0
step configure cmake -S "$ROOT" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
  -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" \
  -DCMAKE_CUDA_FLAGS=-lineinfo && CONFIGURED=1
BUILT=0
if [ "$CONFIGURED" -eq 1 ]; then
  step build cmake --build "$BUILD" -j "$JOBS" && BUILT=1
fi
if [ "$BUILT" -eq 0 ]; then
  note_failure "build did not complete: no tests run"
  finish
fi

# ------------------------------------------------------------ ctest
if want ctest; then
step ctest ctest --test-dir "$BUILD" --output-on-failure -j 1 \
  --output-junit "$LOGS/ctest_junit.xml"
fi
if ! want ctest; then
  :
elif [ "$GPU_VISIBLE" -eq 1 ]; then
  skipped=$(grep -cE '^[[:space:]]*[0-9]+ - gpu:.*\((Skipped|Not Run)' "$LOGS/ctest.log" || true)
  if [ "$skipped" -ne 0 ]; then
    note_failure "ctest: $skipped GPU test(s) skipped although nvidia-smi sees a GPU"
  fi
else
  note_failure "no GPU visible (nvidia-smi -L failed): GPU tests were skipped"
fi

# ------------------------------------------------------------ sanitizers
GPU_TESTS="$BUILD/tests/vmm_gpu_tests"
SANITIZER=$(command -v compute-sanitizer || true)
if [ ! -x "$GPU_TESTS" ]; then
  note_failure "no GPU test binary at $GPU_TESTS"
elif [ -z "$SANITIZER" ]; then
  note_failure "compute-sanitizer not found"
else
  # The GPU tests stretch their kernels and time limits by this factor: under
  # a sanitizer every driver call and kernel is slower.
  export VMM_TEST_TIME_SCALE=${VMM_TEST_TIME_SCALE:-8}
  # API errors are not reported: some cases provoke driver errors on purpose
  # (a misaligned reserve must come back as a DriverError); our code turns
  # every unexpected one into a test failure anyway.
  want memcheck && step memcheck timeout 420 "$SANITIZER" --tool memcheck --error-exitcode 1 \
    --report-api-errors no "$GPU_TESTS" --durations yes
  want racecheck && step racecheck timeout 240 "$SANITIZER" --tool racecheck --error-exitcode 1 \
    --report-api-errors no "$GPU_TESTS" "[gpu]"
  want synccheck && step synccheck timeout 240 "$SANITIZER" --tool synccheck --error-exitcode 1 \
    --report-api-errors no "$GPU_TESTS" "[gpu]"
fi

finish
