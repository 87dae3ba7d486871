#!/usr/bin/env bash
# The two-GPU suite: per-device state, peer access, cross-device
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

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$VMM_ROOT" || exit 2
ROOT=$VMM_ROOT
BUILD="$ROOT/build-gpu"
vmm_gpu_env

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_multi_logs.XXXXXX")
vmm_steps_init "$LOGS"

finish() {
  vmm_step_report "$LOGS/summary.txt" "vmmalloc two-GPU suite, $(vmm_utc_now)" \
    index,name,driver_version,memory.total 64
  vmm_ship_logs gpu_multi_logs.tgz gpu_multi_summary.txt "$LOGS/summary.txt"
  exit "$VMM_STEP_FAILED"
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
  vmm_step_fail "fewer than two GPUs visible (nvidia-smi -L: ${GPUS:-0}): the cases would only be skipped"
fi

# ------------------------------------------------------------ build
if ! vmm_step configure vmm_gpu_configure "$BUILD" -DCMAKE_CUDA_FLAGS=-lineinfo; then
  vmm_step_fail "configure failed: no tests run"
  finish
fi
if ! vmm_step build cmake --build "$BUILD" -j "$JOBS" --target vmm_multi_gpu_tests; then
  vmm_step_fail "build failed: no tests run"
  finish
fi
TESTS="$BUILD/tests/vmm_multi_gpu_tests"

# ------------------------------------------------------------ ctest
vmm_step ctest ctest --test-dir "$BUILD" -R '^multi-gpu:' --output-on-failure -j 1 \
  --output-junit "$LOGS/ctest_junit.xml"
ran=$(grep -cE '^[[:space:]]*[0-9]+/[0-9]+ Test +#[0-9]+: multi-gpu:' "$LOGS/ctest.log" || true)
skipped=$(grep -cE 'multi-gpu:.*(Skipped|Not Run)' "$LOGS/ctest.log" || true)
if [ "${ran:-0}" -eq 0 ]; then
  vmm_step_fail "ctest: no multi-gpu test ran"
elif [ "$GPUS" -ge 2 ] && [ "$skipped" -ne 0 ]; then
  vmm_step_fail "ctest: $skipped multi-gpu test(s) skipped although $GPUS GPUs are visible (no peer to peer?)"
fi

# ------------------------------------------------------------ memcheck
SANITIZER=$(command -v compute-sanitizer || true)
if [ -z "$SANITIZER" ]; then
  vmm_step_fail "compute-sanitizer not found"
else
  # API errors are not reported: our own code turns every unexpected driver
  # error into a test failure, and the tests provoke none on purpose.
  vmm_step memcheck timeout 480 "$SANITIZER" --tool memcheck --error-exitcode 1 \
    --target-processes all --report-api-errors no "$TESTS" --durations yes
fi

finish
