#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (AddressSanitizer + UBSan) into
# build-fuzz/, replays each seed corpus and regression set (CTest), then runs
# each fuzzer for VMMALLOC_FUZZ_SECONDS (default 60) from a copy of its
# corpus. A crash fails the run and leaves the input under build-fuzz/crashes/
# (add it to tests/fuzz/regressions/<fuzzer>/ once fixed).
# Prints "fuzz: <target> <N> inputs" per target for the reliability figures.
#
# Usage: scripts/fuzz.sh [TARGET...]    (default: every target)
# Environment: VMMALLOC_FUZZ_SECONDS, VMMALLOC_FUZZ_BUILD_DIR (default
# build-fuzz).
set -uo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$VMM_ROOT" || exit 1

SECONDS_EACH="${VMMALLOC_FUZZ_SECONDS:-60}"
BUILD="${VMMALLOC_FUZZ_BUILD_DIR:-build-fuzz}"
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(config_fuzzer trace_fuzzer snapshot_fuzzer ipc_fuzzer live_request_fuzzer)

scripts/setup-deps.sh --fuzz || exit 1
NO_ASLR=()
if setarch "$(uname -m)" -R true >/dev/null 2>&1; then NO_ASLR=(setarch "$(uname -m)" -R); fi

mkdir -p "$BUILD"
CC=clang CXX=clang++ cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DVMMALLOC_BUILD_FUZZERS=ON -DVMMALLOC_SANITIZE=address,undefined \
  -DVMMALLOC_BUILD_TESTS=OFF -DVMMALLOC_BUILD_TOOLS=OFF -DVMMALLOC_BUILD_BENCH=OFF \
  -DCMAKE_CUDA_COMPILER= >"$BUILD/configure.log" 2>&1 || {
  cat "$BUILD/configure.log" >&2
  exit 1
}
cmake --build "$BUILD" --parallel "$VMM_JOBS" --target "${TARGETS[@]}" || exit 1
"${NO_ASLR[@]}" ctest --test-dir "$BUILD" --output-on-failure || exit 1

status=0
mkdir -p "$BUILD/crashes"
for t in "${TARGETS[@]}"; do
  work="$BUILD/corpus/$t"
  mkdir -p "$work"
  cp -n tests/fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
  log="$BUILD/$t.log"
  "${NO_ASLR[@]}" "$BUILD/tests/fuzz/$t" "$work" -max_total_time="$SECONDS_EACH" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$BUILD/crashes/$t-" >"$log" 2>&1
  rc=$?
  runs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "fuzz: $t ${runs:-0} inputs in ${SECONDS_EACH}s, rc $rc"
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log" >&2
    status=1
  fi
done
exit "$status"
