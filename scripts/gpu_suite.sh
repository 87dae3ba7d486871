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

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$VMM_ROOT" || exit 2
ROOT=$VMM_ROOT
BUILD="$ROOT/build-gpu"
vmm_gpu_env

STEPS=${STEPS:-ctest,memcheck,racecheck,synccheck}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/gpu_suite_logs.XXXXXX")
vmm_steps_init "$LOGS"
VMM_STEP_TAIL=25

finish() {
  local tag=${STEPS//,/-}
  vmm_step_report "$LOGS/summary.txt" "vmmalloc GPU suite, $(vmm_utc_now)" \
    name,driver_version,memory.total 1 --dirty
  vmm_ship_logs "gpu_suite_logs-$tag.tgz" "gpu_suite_summary-$tag.txt" "$LOGS/summary.txt"
  exit "$VMM_STEP_FAILED"
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
vmm_step configure vmm_gpu_configure "$BUILD" -DCMAKE_CUDA_FLAGS=-lineinfo && CONFIGURED=1
BUILT=0
if [ "$CONFIGURED" -eq 1 ]; then
  vmm_step build cmake --build "$BUILD" -j "$JOBS" && BUILT=1
fi
if [ "$BUILT" -eq 0 ]; then
  vmm_step_fail "build did not complete: no tests run"
  finish
fi

# ------------------------------------------------------------ ctest
if vmm_want ctest; then
vmm_step ctest ctest --test-dir "$BUILD" --output-on-failure -j 1 \
  --output-junit "$LOGS/ctest_junit.xml"
fi
if ! vmm_want ctest; then
  :
elif [ "$GPU_VISIBLE" -eq 1 ]; then
  skipped=$(grep -cE '^[[:space:]]*[0-9]+ - gpu:.*\((Skipped|Not Run)' "$LOGS/ctest.log" || true)
  if [ "$skipped" -ne 0 ]; then
    vmm_step_fail "ctest: $skipped GPU test(s) skipped although nvidia-smi sees a GPU"
  fi
else
  vmm_step_fail "no GPU visible (nvidia-smi -L failed): GPU tests were skipped"
fi

# ------------------------------------------------------------ sanitizers
GPU_TESTS="$BUILD/tests/vmm_gpu_tests"
SANITIZER=$(command -v compute-sanitizer || true)
if [ ! -x "$GPU_TESTS" ]; then
  vmm_step_fail "no GPU test binary at $GPU_TESTS"
elif [ -z "$SANITIZER" ]; then
  vmm_step_fail "compute-sanitizer not found"
else
  # The GPU tests stretch their kernels and time limits by this factor: under
  # a sanitizer every driver call and kernel is slower.
  export VMM_TEST_TIME_SCALE=${VMM_TEST_TIME_SCALE:-8}
  # API errors are not reported: some cases provoke driver errors on purpose
  # (a misaligned reserve must come back as a DriverError); our code turns
  # every unexpected one into a test failure anyway.
  vmm_want memcheck && vmm_step memcheck timeout 420 "$SANITIZER" --tool memcheck --error-exitcode 1 \
    --report-api-errors no "$GPU_TESTS" --durations yes
  vmm_want racecheck && vmm_step racecheck timeout 240 "$SANITIZER" --tool racecheck --error-exitcode 1 \
    --report-api-errors no "$GPU_TESTS" "[gpu]"
  vmm_want synccheck && vmm_step synccheck timeout 240 "$SANITIZER" --tool synccheck --error-exitcode 1 \
    --report-api-errors no "$GPU_TESTS" "[gpu]"
fi

finish
