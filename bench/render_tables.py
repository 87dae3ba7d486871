#!/usr/bin/env python3
"""Render bench/results/*.json into the tables of docs/benchmarks.md.

Reads every results file (the format of BENCH.md: bench, commit, device,
driver, date, command, rows) and rewrites the part of docs/benchmarks.md
between the markers `<!-- tables:begin -->` and `<!-- tables:end -->`: one
table per file, headed by its card, driver, date, commit and command, with
the row fields as columns. For workspace_growth it also computes whether the
targets are met, so that line always follows the committed figures and is
never typed by hand.

Python 3 standard library only.

    python3 bench/render_tables.py           # rewrite docs/benchmarks.md
    python3 bench/render_tables.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN = "<!-- tables:begin -->"
END = "<!-- tables:end -->"

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
# The workspace_growth targets (issue 2): peak = final size plus at most the
# rounding of the final size up to the 2 MiB mapping granularity; every
# resize under 0.5 ms of host time, none waiting for the queued work; the
# base address never moves.
GRANULE = 2 * MIB
MAX_RESIZE_MS = 0.5
VMMALLOC_WORKSPACE = "vmmalloc-workspace"


def fmt_bytes(n: int) -> str:
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    if n >= KIB:
        return f"{n / KIB:.1f} KiB"
    return f"{n} B"


def fmt_value(key: str, value) -> str:
    """One cell: units follow the field's name, as BENCH.md defines them."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(fmt_value(key, v) for v in value)
    if isinstance(value, (int, float)):
        if key.endswith("_bytes") or key.endswith("_bytes_max_rank"):
            return fmt_bytes(int(value))
        if key.endswith("_ms"):
            return f"{value:.3f}"
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def columns_of(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        for key in row:
            if key not in cols:
                cols.append(key)
    return cols


def round_up(n: int, unit: int) -> int:
    return (n + unit - 1) // unit * unit


def workspace_growth_verdict(doc: dict) -> list[str]:
    """The 'target met?' line and the ratios against the other systems."""
    rows = {r.get("system"): r for r in doc.get("rows", [])}
    ws = rows.get(VMMALLOC_WORKSPACE)
    if ws is None:
        return [f"**Target met? no**: this run has no `{VMMALLOC_WORKSPACE}` row."]

    final = int(ws["final_bytes"])
    peak = int(ws["peak_device_bytes"])
    allowed = round_up(final, GRANULE)
    slowest = float(ws["max_resize_ms"])
    checks = [
        (peak <= allowed,
         f"peak {fmt_bytes(peak)} ({peak} B) vs final size {fmt_bytes(final)} rounded up to "
         f"2 MiB ({allowed} B): {'+' if peak >= final else '-'}{fmt_bytes(abs(peak - final))}"),
        (slowest < MAX_RESIZE_MS, f"slowest resize {slowest:.3f} ms (target < {MAX_RESIZE_MS} ms)"),
        (not ws["waited_for_queue"],
         "no resize waited for the queued work" if not ws["waited_for_queue"]
         else "a resize waited for the queued work"),
        (bool(ws["address_stable"]),
         "base address unchanged" if ws["address_stable"] else "base address moved"),
    ]
    met = all(ok for ok, _ in checks)
    lines = [f"**Target met? {'yes' if met else 'no'}** ({VMMALLOC_WORKSPACE}):", ""]
    lines += [f"- {'met' if ok else 'MISSED'}: {text}" for ok, text in checks]

    others = [r for name, r in rows.items() if name != VMMALLOC_WORKSPACE]
    if others:
        lines += ["", f"Against `{VMMALLOC_WORKSPACE}` in the same run:", ""]
        for r in others:
            parts = []
            if peak > 0:
                parts.append(f"{int(r['peak_device_bytes']) / peak:.2f}x the peak memory")
            if slowest > 0:
                parts.append(f"slowest resize {float(r['max_resize_ms']) / slowest:.1f}x as long")
            parts.append("waited for the queue" if r.get("waited_for_queue") else "did not wait")
            parts.append("address stable" if r.get("address_stable") else "address moved")
            lines.append(f"- `{r.get('system')}`: " + ", ".join(parts))
    return lines


VERDICTS = {
    "workspace_growth": workspace_growth_verdict,
}


def render_file(path: pathlib.Path, doc: dict) -> list[str]:
    bench = doc.get("bench", path.stem)
    rows = doc.get("rows", [])
    commit = str(doc.get("commit") or "unknown")
    driver = doc.get("driver")
    lines = [
        f"### {bench}",
        "",
        f"Card: **{doc.get('device', '?')}**, driver {driver if driver is not None else '-'}, "
        f"{doc.get('date', '?')}, commit `{commit[:12]}` "
        f"(`{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`).",
        "",
        f"Command: `{doc.get('command', '?')}`",
        "",
    ]
    if not rows:
        lines += ["(no rows)", ""]
        return lines
    cols = columns_of(rows)
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" if c == "system" else "---:" for c in cols) + "|")
    for row in rows:
        cells = [cell(fmt_value(c, row.get(c))) for c in cols]
        if "system" in row:
            cells[cols.index("system")] = f"`{row['system']}`"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    verdict = VERDICTS.get(bench)
    if verdict is not None:
        lines += verdict(doc)
        lines.append("")
    return lines


def render(results_dir: pathlib.Path) -> str:
    files = sorted(results_dir.glob("*.json"))
    lines = [
        "<!-- Generated by bench/render_tables.py from bench/results/*.json: edit those, not this. -->",
        "",
    ]
    if not files:
        lines += ["No results yet: run a benchmark (see above), then `python3 bench/render_tables.py`.", ""]
    for path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"render_tables: cannot read {path}: {e}")
        if not isinstance(doc, dict) or not isinstance(doc.get("rows", []), list):
            raise SystemExit(f"render_tables: {path} is not a results file (BENCH.md format)")
        try:
            lines += render_file(path, doc)
        except (KeyError, TypeError, ValueError) as e:
            raise SystemExit(f"render_tables: {path}: missing or bad field: {e!r}")
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=pathlib.Path, default=ROOT / "bench" / "results",
                    help="directory of results files (default: bench/results)")
    ap.add_argument("--doc", type=pathlib.Path, default=ROOT / "docs" / "benchmarks.md",
                    help="document to update (default: docs/benchmarks.md)")
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 if the document is out of date")
    args = ap.parse_args()

    text = args.doc.read_text(encoding="utf-8")
    begin = text.find(BEGIN)
    end = text.find(END)
    if begin < 0 or end < 0 or end < begin:
        print(f"render_tables: {args.doc} lacks the markers {BEGIN} ... {END}", file=sys.stderr)
        return 2
    new = text[: begin + len(BEGIN)] + "\n" + render(args.results) + text[end:]
    if args.check:
        if new != text:
            print(f"render_tables: {args.doc} is out of date; run bench/render_tables.py",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.doc.write_text(new, encoding="utf-8")
        print(f"render_tables: updated {args.doc}")
    else:
        print(f"render_tables: {args.doc} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
