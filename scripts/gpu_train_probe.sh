#!/usr/bin/env bash
# Where the training benchmark's time goes, on the GPU machine: builds the
# library and the PyTorch adapter (scripts/gpu_torch.sh build), then runs
# bench/torch_train.py with --step-times (per-step GPU and host time, and
# vmmalloc's counters over the timed steps) for each setting given, writing
# nothing to bench/results. Logs to $OUT/probe.log (or stdout).
#
# Usage: COMMIT=<sha> scripts/gpu_train_probe.sh 'ARGS' ['ARGS'...]
#   each ARGS: extra bench/torch_train.py arguments for one probe, e.g.
#   '--systems torch-default,vmmalloc --sample-hz 1000'
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
: "${COMMIT:?set COMMIT}"
LOG=${OUT:+$OUT/probe.log}
LOG=${LOG:-/dev/stdout}
scripts/gpu_torch.sh "$COMMIT" build >/tmp/probe_build.log 2>&1 || { tail -40 /tmp/probe_build.log; exit 1; }
export VMMALLOC_LIBRARY_DIR=$PWD/build-gpu-torch/allocator
export VMMALLOC_TORCH_BUILD_DIR=$PWD/build-gpu-torch/torch-extension
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
for args in "$@"; do
  echo "=== probe: $args" | tee -a "$LOG"
  # shellcheck disable=SC2086
  python3 bench/torch_train.py --commit "$COMMIT" --step-times --out /tmp/probe.json $args 2>&1 |
    grep -v loss_type >>"$LOG"
  grep tokens_per_s -A0 /tmp/probe.json >/dev/null 2>&1 && python3 -c '
import json; d = json.load(open("/tmp/probe.json"))
for r in d["rows"]: print("ROW", r["system"], r["tokens_per_s"], r["tokens_per_s_runs"], round(r["peak_device_bytes"] / 2**30, 3))' | tee -a "$LOG"
done
