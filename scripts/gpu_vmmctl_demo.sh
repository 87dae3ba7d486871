#!/usr/bin/env bash
# Live inspection on the GPU: starts processes that use vmmalloc on the CUDA
# backend and points `vmmctl` at them while they run - ps, show, map, top,
# diff and html - saving every output under $OUT (or $BUILD/vmmctl-demo).
#
#   1. a PyTorch training process (tools/vmmctl/demo_train.py: vmmalloc
#      installed as PyTorch's allocator, a named workspace growing and
#      shrinking with the batch), where PyTorch is importable with CUDA;
#   2. vmmctl_workload --churn (tests/cli/workload.cpp), on CUDA: known
#      workspaces and blocks, and allocations all the while.
# Each must report the cuda backend in its snapshot, and vmmctl must answer
# for it; after it exits, `vmmctl show PID` must say so (exit status 5).
#
# Usage: scripts/gpu_vmmctl_demo.sh [--bench] [--no-torch]
#   --bench     also run bench/alloc_latency (vmmalloc rows) once per
#               observability setting - the default (live socket on,
#               allocation events off), live_socket:off and
#               allocation_events:on - and print the rows side by side
#   --no-torch  skip the PyTorch process
# Environment: BUILD (default build-gpu-vmmctl), JOBS (nproc), PYTHON
# (python3), CUDA_ARCH (90), OUT (where results go), VMMCTL_DEMO_BACKEND
# (cuda; `host` runs the workload part on a machine without a GPU, to try
# the script itself).
set -uo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$VMM_ROOT" || exit 2

BENCH=0
TORCH=1
for arg in "$@"; do
  case "$arg" in
    --bench) BENCH=1 ;;
    --no-torch) TORCH=0 ;;
    *) sed -n '2,24p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
  esac
done
BUILD=${BUILD:-build-gpu-vmmctl}
vmm_gpu_env
PY=${PYTHON:-python3}
BACKEND=${VMMCTL_DEMO_BACKEND:-cuda}
RESULTS=${OUT:-$BUILD/vmmctl-demo}
mkdir -p "$RESULTS"
STATUS=0
SUMMARY=()
note() { SUMMARY+=("$*"); echo "=== $*"; }
fail() { STATUS=1; note "FAILED: $*"; }

# ------------------------------------------------------------------ build
TARGETS=(vmmalloc vmmctl vmmctl_workload)
[ "$BENCH" = 1 ] && TARGETS+=(alloc_latency)
vmm_gpu_configure "$BUILD" -DVMMALLOC_BUILD_TESTS=ON -DVMMALLOC_BUILD_TOOLS=ON -DVMMALLOC_BUILD_BENCH=ON \
  >"$RESULTS/cmake.log" 2>&1 || { tail -n 30 "$RESULTS/cmake.log"; exit 1; }
vmm_build "$BUILD" --target "${TARGETS[@]}" >"$RESULTS/build.log" 2>&1 ||
  { tail -n 40 "$RESULTS/build.log"; exit 1; }
VMMCTL=$BUILD/tools/vmmctl/vmmctl
WORKLOAD=$BUILD/tests/cli/vmmctl_workload
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  >"$RESULTS/gpu.txt" 2>&1 || true
echo "GPU: $(cat "$RESULTS/gpu.txt")"

# Every process here, vmmctl too, reads the same live_socket_dir.
SOCKDIR=$(mktemp -d /tmp/vmmctl-demo-XXXXXX)
chmod 1777 "$SOCKDIR"
export VMMALLOC_CONF="live_socket_dir:$SOCKDIR,allocation_events:on"

PIDS=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$SOCKDIR"
}
trap cleanup EXIT

# start_process NAME COMMAND...: runs it with its stdin on a FIFO held open
# (closing it stops the process), waits for "ready PID"; sets READY_PID and
# FIFO_FD.
start_process() {
  local name=$1
  shift
  local fifo=$SOCKDIR/$name.stdin
  mkfifo "$fifo"
  "$@" <"$fifo" >"$RESULTS/$name.stdout" 2>"$RESULTS/$name.stderr" &
  PIDS+=($!)
  exec {FIFO_FD}>"$fifo"
  READY_PID=""
  local _
  for _ in $(seq 1 600); do  # up to 5 minutes: the PyTorch adapter may compile first
    READY_PID=$(sed -n 's/^ready \([0-9]*\)$/\1/p' "$RESULTS/$name.stdout" | head -n1)
    [ -n "$READY_PID" ] && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 20 "$RESULTS/$name.stderr"
  return 1
}

# inspect NAME PID: every vmmctl command against the live process.
inspect() {
  local name=$1 pid=$2 out=$RESULTS/$1
  mkdir -p "$out"
  "$VMMCTL" ps >"$out/ps.txt" 2>&1 || fail "$name: vmmctl ps"
  "$VMMCTL" ps --json >"$out/ps.json" 2>&1 || fail "$name: vmmctl ps --json"
  grep -q "\"pid\":$pid" "$out/ps.json" || fail "$name: vmmctl ps does not list pid $pid"
  "$VMMCTL" show "$pid" --json -o "$out/snapshot-a.json" || fail "$name: vmmctl show --json"
  grep -q "\"backend\":\"$BACKEND\"" "$out/snapshot-a.json" ||
    fail "$name: the snapshot shows no $BACKEND device"
  "$VMMCTL" show "$pid" --blocks 60 >"$out/show.txt" 2>&1 || fail "$name: vmmctl show"
  "$VMMCTL" map "$pid" --width 100 >"$out/map.txt" 2>&1 || fail "$name: vmmctl map"
  "$VMMCTL" map "$pid" --json >"$out/map.json" 2>&1 || fail "$name: vmmctl map --json"
  "$VMMCTL" top "$pid" --count 3 --interval 1 >"$out/top.txt" 2>&1 || fail "$name: vmmctl top"
  "$VMMCTL" diff "$out/snapshot-a.json" "$pid" >"$out/diff.txt" 2>&1 || fail "$name: vmmctl diff"
  "$VMMCTL" show "$pid" --json -o "$out/snapshot-b.json" || fail "$name: vmmctl show --json (b)"
  "$VMMCTL" html "$out/snapshot-b.json" -o "$out/map.html" >/dev/null || fail "$name: vmmctl html"
  note "$name (pid $pid): $(head -n 2 "$out/ps.txt" | tail -n 1)"
  sed -n '1,12p' "$out/show.txt"
  cat "$out/map.txt"
}

# stop NAME PID FD: closes its stdin, waits, and checks vmmctl sees it gone.
stop() {
  local name=$1 pid=$2 fd=$3
  exec {fd}>&-
  local _
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  "$VMMCTL" show "$pid" >"$RESULTS/$name/after-exit.txt" 2>&1
  local rc=$?
  [ "$rc" -eq 5 ] || fail "$name: vmmctl show after exit gave exit $rc, not 5"
}

# ------------------------------------------------- 1. a PyTorch training process
if [ "$TORCH" = 1 ] && [ "$BACKEND" = cuda ] && "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  export VMMALLOC_LIBRARY_DIR=$PWD/$BUILD/allocator
  export VMMALLOC_TORCH_BUILD_DIR=$PWD/$BUILD/torch-extension
  export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
  if start_process torch "$PY" tools/vmmctl/demo_train.py --seconds 400; then
    inspect torch "$READY_PID"
    stop torch "$READY_PID" "$FIFO_FD"
  else
    fail "the PyTorch training process did not start (see $RESULTS/torch.stderr)"
  fi
else
  note "PyTorch process skipped (--no-torch, or no CUDA build of PyTorch importable)"
fi

# ----------------------------------------------- 2. vmmctl_workload on CUDA
if VMMALLOC_CONF="$VMMALLOC_CONF,backend:$BACKEND" start_process workload "$WORKLOAD" --serve 300 --churn; then
  inspect workload "$READY_PID"
  stop workload "$READY_PID" "$FIFO_FD"
else
  fail "vmmctl_workload did not start on $BACKEND (see $RESULTS/workload.stderr)"
fi

# ------------------------------------------- 3. what each setting costs
if [ "$BENCH" = 1 ]; then
  for setting in default live_socket:off allocation_events:on; do
    conf="live_socket_dir:$SOCKDIR"
    [ "$setting" != default ] && conf="$conf,$setting"
    file=$RESULTS/alloc_latency_${setting//:/_}.json
    VMMALLOC_CONF=$conf "$BUILD/bench/alloc_latency" --systems vmmalloc --out "$file" \
      >"$RESULTS/alloc_latency_${setting//:/_}.log" 2>&1 || fail "alloc_latency ($setting)"
    note "alloc_latency with $setting: $file"
  done
  "$PY" - "$RESULTS" <<'EOF' || fail "comparing the alloc_latency rows"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
runs = {s: json.loads((out / f"alloc_latency_{s}.json").read_text())
        for s in ("default", "live_socket_off", "allocation_events_on")}
def rows(r):
    return {(x["size_bytes"], x["threads"]): x for x in r["rows"] if x["system"] == "vmmalloc"}
base = rows(runs["default"])
print(f"{'bytes':>10} {'threads':>7} {'default ns':>11} {'socket off ns':>14} {'events on ns':>13}")
for key in sorted(base):
    cells = [rows(runs[s])[key]["ns_per_pair_median"] for s in ("default", "live_socket_off", "allocation_events_on")]
    print(f"{key[0]:>10} {key[1]:>7} {cells[0]:>11.1f} {cells[1]:>14.1f} {cells[2]:>13.1f}")
EOF
fi

echo
echo "=== summary"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
echo "outputs in $RESULTS"
exit "$STATUS"
