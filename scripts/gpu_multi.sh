#!/usr/bin/env bash
# The two-GPU suite (issue 8): per-device state, peer access, cross-device
# copies and IPC across processes and GPUs. Run it on a machine with two GPUs
# (nvidia-h200-x2 / nvidia-h100-x2), from the repository root or anywhere:
#
#   1. configure build-gpu (sm_90, -lineinfo) and build vmm_multi_gpu_tests
#   2. ctest -R '^multi-gpu:': every case must RUN and pass; a case reported
#      skipped while two GPUs are visible is a failure
#   3. the same binary under compute-sanitizer memcheck, children included
#      (--target-processes all: the IPC cases spawn the importer process)
#
# NVLink multicast stays off: nothing here calls cuMulticastCreate.
# Every step's output goes to a log; with OUT set the logs are tarred into
# $OUT/gpu_multi_logs.tgz and the summary copied to $OUT/gpu_multi_summary.txt.
# Exits non-zero if any step failed. Environment: COMMIT (printed in the
# summary), JOBS (build parallelism, default nproc), CUDA_ARCH (default 90).
set -u
set -o pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
BUILD="$ROOT/build-gpu"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
CUDA_ARCH=${CUDA_ARCH:-90}
export PATH="$PATH:/usr/local/cuda/bin"

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_multi_logs.XXXXXX")
SUMMARY="$LOGS/summary.txt"
FAILED=0
declare -a RESULTS=()

# step NAME COMMAND...: runs COMMAND with its output in $LOGS/NAME.log (and a
# tail of it on the console), recording the outcome and duration.
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

finish() {
  {
    echo "vmmalloc two-GPU suite, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit: ${COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>/dev/null |
      sed 's/^/gpu: /'
    printf '%s\n' "${RESULTS[@]}"
    if [ "$FAILED" -eq 0 ]; then echo "RESULT: all steps passed"; else echo "RESULT: FAILED"; fi
  } >"$SUMMARY"
  echo
  echo "===================== summary ====================="
  cat "$SUMMARY"
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    tar -czf "$OUT/gpu_multi_logs.tgz" -C "$LOGS" . && echo "logs: $OUT/gpu_multi_logs.tgz"
    cp "$SUMMARY" "$OUT/gpu_multi_summary.txt"
  else
    echo "logs: $LOGS"
  fi
  exit "$FAILED"
}

# ------------------------------------------------------------ environment
{
  echo "# nvidia-smi"; nvidia-smi 2>&1
  echo "# nvidia-smi topo -m (peer to peer paths)"; nvidia-smi topo -m 2>&1
  echo "# nvcc"; nvcc --version 2>&1
  echo "# compute-sanitizer"; compute-sanitizer --version 2>&1
  echo "# cmake"; cmake --version 2>&1
} >"$LOGS/environment.log"
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
if [ "${GPUS:-0}" -lt 2 ]; then
  note_failure "fewer than two GPUs visible (nvidia-smi -L: ${GPUS:-0}): the cases would only be skipped"
fi

# ------------------------------------------------------------ build
if ! step configure cmake -S "$ROOT" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
  -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" \
  -DCMAKE_CUDA_FLAGS=-lineinfo; then
  note_failure "configure failed: no tests run"
  finish
fi
if ! step build cmake --build "$BUILD" -j "$JOBS" --target vmm_multi_gpu_tests; then
  note_failure "build failed: no tests run"
  finish
fi
TESTS="$BUILD/tests/vmm_multi_gpu_tests"

# ------------------------------------------------------------ ctest
step ctest ctest --test-dir "$BUILD" -R '^multi-gpu:' --output-on-failure -j 1 \
  --output-junit "$LOGS/ctest_junit.xml"
ran=$(grep -cE '^[[:space:]]*[0-9]+/[0-9]+ Test +#[0-9]+: multi-gpu:' "$LOGS/ctest.log" || true)
skipped=$(grep -cE 'multi-gpu:.*(Skipped|Not Run)' "$LOGS/ctest.log" || true)
if [ "${ran:-0}" -eq 0 ]; then
  note_failure "ctest: no multi-gpu test ran"
elif [ "$GPUS" -ge 2 ] && [ "$skipped" -ne 0 ]; then
  note_failure "ctest: $skipped multi-gpu test(s) skipped although $GPUS GPUs are visible (no peer to peer?)"
fi

# ------------------------------------------------------------ memcheck
SANITIZER=$(command -v compute-sanitizer || true)
if [ -z "$SANITIZER" ]; then
  note_failure "compute-sanitizer not found"
else
  # API errors are not reported: our own code turns every unexpected driver
  # error into a test failure, and the tests provoke none on purpose.
  step memcheck timeout 480 "$SANITIZER" --tool memcheck --error-exitcode 1 \
    --target-processes all --report-api-errors no "$TESTS" --durations yes
fi

finish
