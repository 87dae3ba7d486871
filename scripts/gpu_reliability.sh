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

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
BUILD="$ROOT/build-gpu"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
CUDA_ARCH=${CUDA_ARCH:-90}
STEPS=${STEPS:-build,ctest,figures}
STRESS_ARGS=${STRESS_ARGS:---threads 16 --streams 8 --iterations 100000 --seconds 120 --max-block 256M --workspace 2G}
export PATH="$PATH:/usr/local/cuda/bin"
want() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

LOGS=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_reliability.XXXXXX")}
mkdir -p "$LOGS"
FAILED=0
declare -a RESULTS=()

# step NAME COMMAND...: output to $LOGS/reliability-NAME.log, a tail to the console.
step() {
  local name=$1
  shift
  local log="$LOGS/reliability-$name.log"
  local start=$SECONDS
  echo "=== $name: $*"
  "$@" >"$log" 2>&1
  local rc=$?
  tail -n 30 "$log"
  if [ "$rc" -eq 0 ]; then
    RESULTS+=("PASS  $name ($((SECONDS - start))s)")
  else
    RESULTS+=("FAIL  $name (rc $rc, $((SECONDS - start))s, see reliability-$name.log)")
    FAILED=1
  fi
  return "$rc"
}

finish() {
  {
    echo "vmmalloc GPU reliability, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), steps $STEPS"
    echo "commit: ${COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1 || echo none)"
    printf '%s\n' "${RESULTS[@]}"
    if [ "$FAILED" -eq 0 ]; then echo "RESULT: all steps passed"; else echo "RESULT: FAILED"; fi
  } >"$LOGS/reliability-summary-${STEPS//,/-}.txt"
  echo
  cat "$LOGS/reliability-summary-${STEPS//,/-}.txt"
  echo "logs: $LOGS"
  exit "$FAILED"
}

if ! nvidia-smi -L >/dev/null 2>&1; then
  RESULTS+=("FAIL  no GPU visible (nvidia-smi -L failed)")
  FAILED=1
  finish
fi

if want build; then
  step configure cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" \
    -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)" \
    -DCMAKE_CUDA_FLAGS=-lineinfo || finish
  step build cmake --build "$BUILD" -j "$JOBS" --target vmm_gpu_tests vmm_stress vmm_misuse_probe ||
    finish
fi

if want ctest; then
  step ctest ctest --test-dir "$BUILD" --output-on-failure -j 1 \
    -R '^gpu: ?(fault sweep|churn|misuse|stress)' --output-junit "$LOGS/reliability-ctest-junit.xml"
  ran=$(grep -cE '^[[:space:]]*[0-9]+/[0-9]+ Test' "$LOGS/reliability-ctest.log" || true)
  skipped=$(grep -cE 'Skipped|Not Run' "$LOGS/reliability-ctest.log" || true)
  if [ "$ran" -lt 9 ] || [ "$skipped" -ne 0 ]; then
    RESULTS+=("FAIL  ctest: $ran GPU reliability tests ran, $skipped skipped (expected >= 9, 0)")
    FAILED=1
  fi
fi

if want figures; then
  step figures env COMMIT="${COMMIT:-}" python3 "$ROOT/bench/reliability.py" device \
    --build "$BUILD" --stress-args "$STRESS_ARGS" --out "$LOGS/reliability-device.json"
fi

finish
