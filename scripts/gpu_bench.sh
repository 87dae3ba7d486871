#!/usr/bin/env bash
# Runs the GPU benchmarks on the GPU machine and writes their results to
# bench/results/<name>.json (the format of BENCH.md). Builds into build-gpu
# (shared with scripts/gpu_suite.sh, so a suite run first saves the build).
# When OUT is set, the result files are also copied to $OUT/bench_results.tgz.
#
# Usage: scripts/gpu_bench.sh COMMIT [BENCH...]   (default: every bench)
#   COMMIT: the git sha the tree was built from (recorded in each result;
#           the device's copy of the tree has no .git to ask).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$VMM_ROOT"

if [ $# -lt 1 ]; then
  echo "usage: scripts/gpu_bench.sh COMMIT [BENCH...]" >&2
  exit 2
fi
COMMIT=$1
shift
BENCHES=("$@")
[ ${#BENCHES[@]} -eq 0 ] && BENCHES=(workspace_growth)

BUILD=build-gpu
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
    -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
fi
cmake --build "$BUILD" --parallel "$VMM_JOBS" --target "${BENCHES[@]}"

mkdir -p bench/results
status=0
for b in "${BENCHES[@]}"; do
  echo "=== bench $b"
  "$BUILD/bench/$b" --commit "$COMMIT" --out "bench/results/$b.json" || status=1
done
if [ -n "${OUT:-}" ]; then
  tar -czf "$OUT/bench_results.tgz" bench/results
  echo "results: $OUT/bench_results.tgz"
fi
exit "$status"
