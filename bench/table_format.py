"""Formatting of the tables bench/render_tables.py writes: byte sizes,
cell values by field name (docs/benchmarks.md), escaping, columns.
Python 3 standard library only."""

from __future__ import annotations

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30


def fmt_bytes(n: int) -> str:
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    if n >= KIB:
        return f"{n / KIB:.1f} KiB"
    return f"{n} B"


def fmt_value(key: str, value) -> str:
    """One cell: units follow the field's name (docs/benchmarks.md)."""
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
        if key.startswith("ns_"):
            return f"{value:,.1f}"
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
