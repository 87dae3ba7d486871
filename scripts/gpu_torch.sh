#!/usr/bin/env bash
# The PyTorch integration on the GPU machine: builds libvmmalloc and the
# PyTorch adapter, runs tests/python (pytest, which also runs
# examples/vllm_workspace.py), the two PyTorch benchmarks and the
# `pip install --no-build-isolation ./python` check. Logs and results go to
# $OUT when it is set (logs.tgz, bench JSON files, the PyTorch headers the
# adapter was compiled against), and results to bench/results/.
#
# Usage: scripts/gpu_torch.sh COMMIT [STAGE...]
#   COMMIT  the git sha the tree was built from (recorded in the results;
#           the device's copy of the tree has no .git to ask)
#   STAGE   any of: build test bench-workspace bench-train pip
#           (default: all, in that order; `build` runs first whatever is asked)
# Environment: JOBS (default nproc), PYTHON (default python3), PYTEST_ARGS
# (extra pytest arguments, e.g. "-k workspace").
set -uo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$VMM_ROOT" || exit 2

if [ $# -lt 1 ]; then
  sed -n '2,16p' "${BASH_SOURCE[0]}" >&2
  exit 2
fi
COMMIT=$1
shift
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(test bench-workspace bench-train pip)
for s in "${STAGES[@]}"; do
  case "$s" in
    build|test|bench-workspace|bench-train|pip) ;;
    *) echo "gpu_torch.sh: unknown stage '$s' (build test bench-workspace bench-train pip)" >&2; exit 2 ;;
  esac
done
want() { local s; for s in "${STAGES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

PY=${PYTHON:-python3}
vmm_gpu_env
BUILD=build-gpu-torch
LOGS=$BUILD/logs
mkdir -p "$LOGS" bench/results
export PYTHONUNBUFFERED=1
export VMMALLOC_LIBRARY_DIR=$PWD/$BUILD/allocator
export VMMALLOC_TORCH_BUILD_DIR=$PWD/$BUILD/torch-extension
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
STATUS=0
declare -A RESULT

stage() {  # stage NAME COMMAND...: runs it, logs to $LOGS/NAME.log, records pass/fail
  local name=$1
  shift
  echo "=== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$LOGS/$name.log"
  local rc=${PIPESTATUS[0]}
  RESULT[$name]="exit $rc, $((SECONDS - t0)) s"
  echo "=== $name: ${RESULT[$name]}"
  [ "$rc" -eq 0 ] || STATUS=1
  return "$rc"
}

finish() {
  echo "=== summary (commit $COMMIT)"
  local k
  for k in "${!RESULT[@]}"; do echo "  $k: ${RESULT[$k]}"; done
  if [ -n "${OUT:-}" ]; then
    vmm_tar_out logs.tgz "$LOGS" 2>/dev/null
    for f in bench/results/torch_workspace.json bench/results/torch_train.json; do
      [ -f "$f" ] && cp "$f" "$OUT/"
    done
    echo "results and logs in \$OUT"
  fi
  exit "$STATUS"
}
trap finish EXIT
trap 'exit 143' TERM INT  # a timeout still gets the logs written

environment() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "abi", torch._C._GLIBCXX_USE_CXX11_ABI, "gpu", torch.cuda.is_available())'
  "$PY" -c 'import pytest; print("pytest", pytest.__version__)' || true
  "$PY" -c 'import transformers; print("transformers", transformers.__version__)' || true
  cmake --version | head -1
  g++ --version | head -1
  # The allocator interface the adapter is compiled against, for the record.
  local inc
  inc=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')
  if [ -n "${OUT:-}" ]; then
    tar -czf "$OUT/torch_headers.tgz" -C "$inc" c10/cuda/CUDACachingAllocator.h \
      c10/core/CachingDeviceAllocator.h c10/core/Allocator.h torch/csrc/cuda/CUDAPluggableAllocator.h \
      c10/cuda/CUDAGraphsC10Utils.h 2>/dev/null || true
  fi
}

build_library() {
  vmm_gpu_configure "$BUILD" -DVMMALLOC_BUILD_TESTS=OFF -DVMMALLOC_BUILD_TOOLS=OFF \
    -DVMMALLOC_BUILD_BENCH=OFF &&
    vmm_build "$BUILD" --target vmmalloc
}

build_adapter() {
  VMMALLOC_TORCH_VERBOSE=1 MAX_JOBS=$JOBS "$PY" -c \
    'import vmmalloc._extension as e; print("adapter:", e.load().__file__)'
}

pip_check() {
  local site=$PWD/$BUILD/pip-site
  rm -rf "$site"
  MAX_JOBS=$JOBS "$PY" -m pip install --no-build-isolation --no-deps --no-index --target "$site" ./python &&
    env -u VMMALLOC_LIBRARY_DIR PYTHONPATH="$site" "$PY" -c '
import torch, vmmalloc, vmmalloc.torch as vt
assert vmmalloc.__file__.startswith("'"$site"'"), vmmalloc.__file__
vt.install()
x = torch.ones(1 << 20, device="cuda")
assert vt.memory_stats()["allocations"] >= 1 and x.sum().item() == 1 << 20
print("installed package", vmmalloc.__version__, "from", vmmalloc.__file__, "works; backend",
      torch.cuda.get_allocator_backend())'
}

stage environment environment
stage build-library build_library || exit 1
stage build-adapter build_adapter || exit 1
if want test; then
  # shellcheck disable=SC2086
  stage pytest "$PY" -m pytest -v -rs tests/python ${PYTEST_ARGS:-}
fi
if want bench-workspace; then
  stage bench-workspace "$PY" bench/torch_workspace.py --commit "$COMMIT"
fi
if want bench-train; then
  stage bench-train "$PY" bench/torch_train.py --commit "$COMMIT"
fi
if want pip; then
  stage pip pip_check
fi
