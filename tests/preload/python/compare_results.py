#!/usr/bin/env python3
"""Compares the "result:" lines of two runs of tests/preload/python scripts.

    compare_results.py PLAIN_LOG PRELOADED_LOG [--rtol R]

Lines must match word for word, except numbers, which must agree to within
the relative tolerance (default 1e-4: deterministic settings make the runs
bit-identical in practice; the tolerance only absorbs an operation that has
no deterministic implementation). Prints how many lines were identical and
the largest relative difference; exits 1 on any mismatch or no lines.
"""

import argparse
import re
import sys

NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def results(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.strip() for line in f if line.startswith("result:")]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("plain")
    parser.add_argument("preloaded")
    parser.add_argument("--rtol", type=float, default=1e-4)
    args = parser.parse_args()
    a, b = results(args.plain), results(args.preloaded)
    if not a or len(a) != len(b):
        print(f"compare: {len(a)} result lines plain, {len(b)} preloaded")
        return 1
    identical = 0
    worst = 0.0
    for la, lb in zip(a, b):
        if la == lb:
            identical += 1
            continue
        wa, wb = la.split(), lb.split()
        if len(wa) != len(wb):
            print(f"compare: differ:\n  {la}\n  {lb}")
            return 1
        for x, y in zip(wa, wb):
            if x == y:
                continue
            if not (NUMBER.match(x) and NUMBER.match(y)):
                print(f"compare: differ:\n  {la}\n  {lb}")
                return 1
            fx, fy = float(x), float(y)
            rel = abs(fx - fy) / max(abs(fx), abs(fy), 1e-30)
            worst = max(worst, rel)
            if rel > args.rtol:
                print(f"compare: differ beyond rtol {args.rtol}:\n  {la}\n  {lb}")
                return 1
    print(f"compare: {len(a)} result lines agree ({identical} identical, "
          f"largest relative difference {worst:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
