#!/usr/bin/env bash
# What the live snapshot socket (on by default) costs on the allocation hot
# path: bench/alloc_latency run RUNS times with live_socket:on and
# live_socket:off alternately (on, off, on, off, ...), each run a process of
# its own, then the median ns per pair of each cell over the runs, side by
# side. The socket is host-side only (a thread asleep in poll()), so the
# host backend measures the same allocation path; pass --backend cuda on a
# GPU machine.
#
# Usage: bench/diagnostics/socket_cost.sh ALLOC_LATENCY_BINARY [RUNS (4)] [alloc_latency args...]
#   e.g. bench/diagnostics/socket_cost.sh build/bench/alloc_latency 4 --backend host --threads 1,2
set -euo pipefail
BIN=${1:?usage: bench/diagnostics/socket_cost.sh ALLOC_LATENCY_BINARY [RUNS] [ARGS...]}
RUNS=${2:-4}
shift $(( $# >= 2 ? 2 : 1 ))
DIR=$(mktemp -d "${TMPDIR:-/tmp}/socket_cost.XXXXXX")
for r in $(seq 1 "$RUNS"); do
  for setting in on off; do
    VMMALLOC_CONF=live_socket:$setting "$BIN" "$@" --out "$DIR/$setting-$r.json" >"$DIR/$setting-$r.log" 2>&1 ||
      { echo "socket_cost: run $r ($setting) failed, see $DIR/$setting-$r.log" >&2; exit 1; }
  done
done
python3 - "$DIR" <<'PY'
import collections, json, pathlib, statistics, sys
cells = collections.defaultdict(lambda: {"on": [], "off": []})
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    setting = f.name.split("-")[0]
    for row in json.loads(f.read_text())["rows"]:
        cells[(row["size_bytes"], row["threads"])][setting].append(row["ns_per_pair_median"])
print(f"{'bytes':>10} {'threads':>7} {'socket on ns':>13} {'socket off ns':>14}   runs (on | off)")
for (size, threads), v in sorted(cells.items()):
    print(f"{size:>10} {threads:>7} {statistics.median(v['on']):>13.1f} {statistics.median(v['off']):>14.1f}   "
          f"{' '.join(map(str, v['on']))} | {' '.join(map(str, v['off']))}")
PY
