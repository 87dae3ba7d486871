#!/usr/bin/env bash
# Runs the C++ GPU benchmarks on the GPU machine and writes their results to
# bench/results/<name>.json (the format of docs/benchmarks.md). Builds into
# build-gpu (shared with scripts/gpu_suite.sh, so a suite run first saves the
# build). When OUT is set, the result files are also copied to
# $OUT/bench_results.tgz.
#
# Usage: scripts/gpu_bench.sh COMMIT [BENCH...]   (default: workspace_growth)
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

vmm_gpu_env
BUILD=build-gpu
[ -f "$BUILD/CMakeCache.txt" ] || vmm_gpu_configure "$BUILD"
vmm_build "$BUILD" --target "${BENCHES[@]}"

mkdir -p bench/results
status=0
for b in "${BENCHES[@]}"; do
  echo "=== bench $b"
  "$BUILD/bench/$b" --commit "$COMMIT" --out "bench/results/$b.json" || status=1
done
if [ -n "${OUT:-}" ]; then
  vmm_tar_out bench_results.tgz bench/results
  echo "results: $OUT/bench_results.tgz"
fi
exit "$status"
