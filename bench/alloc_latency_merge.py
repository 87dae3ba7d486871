#!/usr/bin/env python3
"""Merge the parts of one alloc_latency run into one results file.

bench/alloc_latency (vmmalloc, cudamalloc, cudamallocasync) and
bench/alloc_latency_torch (torch-caching) run one after the other on the same
card (bench/alloc_latency.sh); each writes its rows in the results format of
docs/benchmarks.md.
This writes one file with the rows of all parts, in the order given. The card
and driver come from the first part that names the card (alloc_latency reads
them from the CUDA runtime); with none, from nvidia-smi.

Python 3 standard library only.

    bench/alloc_latency_merge.py --out bench/results/alloc_latency.json \\
        --commit SHA --command 'bench/alloc_latency.sh SHA' PART.json...
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

ROW_FIELDS = ("system", "size_bytes", "threads", "ns_per_pair_median", "pairs_per_s_total")


def card_from_nvidia_smi() -> tuple[str | None, str | None]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", "0"],
            check=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    name, _, driver = out.partition(",")
    return (name.strip() or None), (driver.strip() or None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--command", required=True, help="the command that produced the run")
    ap.add_argument("parts", nargs="+", type=pathlib.Path)
    args = ap.parse_args()

    docs = []
    for p in args.parts:
        doc = json.loads(p.read_text(encoding="utf-8"))
        if doc.get("bench") != "alloc_latency" or not isinstance(doc.get("rows"), list):
            print(f"alloc_latency_merge: {p} is not an alloc_latency results file", file=sys.stderr)
            return 1
        for row in doc["rows"]:
            missing = [f for f in ROW_FIELDS if f not in row]
            if missing:
                print(f"alloc_latency_merge: {p}: a row lacks {missing}", file=sys.stderr)
                return 1
        docs.append(doc)

    named = [d for d in docs if d.get("device") not in (None, "", "unknown")]
    if named:
        device, driver = named[0]["device"], named[0].get("driver")
    else:
        device, driver = card_from_nvidia_smi()
        driver = driver or next((d.get("driver") for d in docs if d.get("driver")), None)
    rows = [row for d in docs for row in d["rows"]]
    merged = {
        "bench": "alloc_latency",
        "commit": args.commit,
        "device": device or "unknown",
        "driver": driver,
        "date": min(d["date"] for d in docs),  # when the run started
        "command": args.command,
        "rows": rows,
    }
    text = "{\n" + ",\n".join(
        f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in merged.items() if k != "rows")
    text += ',\n  "rows": [\n' + ",\n".join(f"    {json.dumps(r)}" for r in rows) + "\n  ]\n}\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    systems = sorted({r["system"] for r in rows})
    print(f"alloc_latency_merge: wrote {args.out}: {len(rows)} rows ({', '.join(systems)}) on {merged['device']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
