#!/usr/bin/env bash
# The GPU part of the reliability work (docs/reliability.md), run on the GPU
# machine from the repository root (or anywhere: it cds there):
#
#   build    configure build-gpu (as scripts/gpu_suite.sh does, shared with
#            it) and build what this needs: vmm_gpu_tests, vmm_stress,
#            vmm_misuse_probe
#   ctest    the GPU reliability cases, which must RUN (a skip is a failure
#            here): the fault sweep's GPU subset, the churn test, the graph
#            capture that fails midway, the misuse probes (exit-time
#            teardown, use before CUDA is initialised, fork), vmm_stress
#   figures  bench/reliability.py device: a large vmm_stress run on the GPU
#            (STRESS_ARGS), the GPU fault sweep, and compute-sanitizer
#            (memcheck of the churn, misuse and a small stress run;
#            racecheck and synccheck of the churn) -> reliability-device.json
#
# Every step's output goes to a log; with OUT set, the logs, the CTest JUnit
# file, a summary and reliability-device.json are written to $OUT. Merge the
# device figures into the committed results afterwards, on any machine:
#   python3 bench/reliability.py merge bench/results/reliability.json \
#       OUT/reliability-device.json
#
# Environment: COMMIT (recorded in the results; the device's copy of the tree
# may have no .git), STEPS (comma list of build,ctest,figures; default all -
# the device allows 10 minutes a call, so the steps may be split over calls
# on one warm machine: build-gpu is reused), STRESS_ARGS (vmm_stress
# arguments of the large run), JOBS, CUDA_ARCH (default 90).
set -u
set -o pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$VMM_ROOT" || exit 2
ROOT=$VMM_ROOT
BUILD="$ROOT/build-gpu"
vmm_gpu_env
STEPS=${STEPS:-build,ctest,figures}
STRESS_ARGS=${STRESS_ARGS:---threads 16 --streams 8 --iterations 100000 --seconds 120 --max-block 256M --workspace 2G}

LOGS=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_reliability.XXXXXX")}
vmm_steps_init "$LOGS"
VMM_STEP_LOG_PREFIX=reliability-

finish() {
  vmm_step_report "$LOGS/reliability-summary-${STEPS//,/-}.txt" \
    "vmmalloc GPU reliability, $(vmm_utc_now), steps $STEPS" name,driver_version 1
  echo "logs: $LOGS"
  exit "$VMM_STEP_FAILED"
}

if ! nvidia-smi -L >/dev/null 2>&1; then
  vmm_step_fail "no GPU visible (nvidia-smi -L failed)"
  finish
fi

if vmm_want build; then
  vmm_step configure vmm_gpu_configure "$BUILD" -DCMAKE_CUDA_FLAGS=-lineinfo || finish
  vmm_step build cmake --build "$BUILD" -j "$JOBS" --target vmm_gpu_tests vmm_stress vmm_misuse_probe ||
    finish
fi

if vmm_want ctest; then
  vmm_step ctest ctest --test-dir "$BUILD" --output-on-failure -j 1 \
    -R '^gpu: ?(fault sweep|churn|misuse|stress)' --output-junit "$LOGS/reliability-ctest-junit.xml"
  ran=$(grep -cE '^[[:space:]]*[0-9]+/[0-9]+ Test' "$LOGS/reliability-ctest.log" || true)
  skipped=$(grep -cE 'Skipped|Not Run' "$LOGS/reliability-ctest.log" || true)
  if [ "$ran" -lt 9 ] || [ "$skipped" -ne 0 ]; then
    vmm_step_fail "ctest: $ran GPU reliability tests ran, $skipped skipped (expected >= 9, 0)"
  fi
fi

if vmm_want figures; then
  vmm_step figures env COMMIT="${COMMIT:-}" python3 "$ROOT/bench/reliability.py" device \
    --build "$BUILD" --stress-args "$STRESS_ARGS" --out "$LOGS/reliability-device.json"
fi

finish
