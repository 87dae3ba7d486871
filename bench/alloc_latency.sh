#!/usr/bin/env bash
# Runs the alloc_latency benchmark on the GPU machine: builds bench/alloc_latency
# (vmmalloc, cudamalloc, cudamallocasync) and bench/alloc_latency_torch
# (torch-caching, against the installed PyTorch), runs them one after the other
# on the same card, and merges their rows into one results file
# (bench/results/alloc_latency.json, the results format of docs/benchmarks.md).
#
# Usage: bench/alloc_latency.sh COMMIT [--torch-only | --no-torch] [--out FILE] [ARGS...]
#   COMMIT       the git sha the tree was built from (the device's copy of the
#                tree has no .git to ask)
#   --torch-only only torch-caching; --no-torch: all but torch-caching. A partial
#                run writes $BUILD/alloc_latency_partial.json unless --out says
#                otherwise, never the committed results file.
#   ARGS         passed to both programs (--sizes, --threads, --window-ms, ...)
# Environment: BUILD (default build-alloc-latency), CUDA_ARCH (90), JOBS (nproc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ $# -lt 1 ]; then
  sed -n '2,15p' "${BASH_SOURCE[0]}" >&2
  exit 2
fi
COMMIT=$1
shift
INVOCATION="bench/alloc_latency.sh $COMMIT $*"
MAIN=1
TORCH=1
OUTFILE=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --torch-only) MAIN=0 ;;
    --no-torch) TORCH=0 ;;
    --out) OUTFILE=$2; shift ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
if [ "$MAIN" = 0 ] && [ "$TORCH" = 0 ]; then
  echo "alloc_latency.sh: --torch-only and --no-torch leave nothing to run" >&2
  exit 2
fi
# Its own build directory: the configuration below (tests and tools off, the
# torch options) must not change the cache of build-gpu that scripts/gpu_suite.sh uses.
BUILD=${BUILD:-build-alloc-latency}
if [ -z "$OUTFILE" ]; then
  if [ "$MAIN" = 1 ] && [ "$TORCH" = 1 ]; then
    OUTFILE=bench/results/alloc_latency.json
  else
    OUTFILE=$BUILD/alloc_latency_partial.json
  fi
fi

# Only the library and the benchmarks are needed: tests and tools stay off.
CONF=(-DVMMALLOC_BUILD_TESTS=OFF -DVMMALLOC_BUILD_TOOLS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}"
      -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")
TARGETS=()
[ "$MAIN" = 1 ] && TARGETS+=(alloc_latency)
if [ "$TORCH" = 1 ]; then
  TORCH_DIR=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))') || {
    echo "alloc_latency.sh: PyTorch is not importable here (use --no-torch to skip torch-caching)" >&2
    exit 1
  }
  TORCH_ABI=$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
  echo "torch: $(python3 -c 'import torch; print(torch.__version__)') at $TORCH_DIR (CXX11 ABI $TORCH_ABI)"
  CONF+=(-DVMMALLOC_TORCH_DIR="$TORCH_DIR" -DVMMALLOC_TORCH_CXX11_ABI="$TORCH_ABI")
  TARGETS+=(alloc_latency_torch)
fi
cmake -S . -B "$BUILD" "${CONF[@]}"
cmake --build "$BUILD" --parallel "${JOBS:-$(nproc)}" --target "${TARGETS[@]}"

PARTS_DIR=$BUILD/alloc_latency_parts
rm -rf "$PARTS_DIR"
mkdir -p "$PARTS_DIR"
PARTS=()
if [ "$MAIN" = 1 ]; then
  echo "=== alloc_latency (vmmalloc, cudamalloc, cudamallocasync)"
  "$BUILD/bench/alloc_latency" --commit "$COMMIT" --out "$PARTS_DIR/main.json" ${ARGS[@]+"${ARGS[@]}"}
  PARTS+=("$PARTS_DIR/main.json")
fi
if [ "$TORCH" = 1 ]; then
  echo "=== alloc_latency_torch (torch-caching, default settings)"
  env -u PYTORCH_CUDA_ALLOC_CONF -u PYTORCH_NO_CUDA_MEMORY_CACHING \
    "$BUILD/bench/alloc_latency_torch" --commit "$COMMIT" --out "$PARTS_DIR/torch.json" ${ARGS[@]+"${ARGS[@]}"}
  PARTS+=("$PARTS_DIR/torch.json")
fi
python3 bench/alloc_latency_merge.py --out "$OUTFILE" --commit "$COMMIT" \
  --command "$INVOCATION" "${PARTS[@]}"
