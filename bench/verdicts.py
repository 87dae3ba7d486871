"""The "target met?" lines under each table of docs/benchmarks.md, worked
out from the committed results (never typed by hand): one function per
benchmark with targets, in VERDICTS. Python 3 standard library only."""

from __future__ import annotations

from table_format import GIB, MIB, fmt_bytes, fmt_value  # noqa: F401


def checklist(subject: str, checks: list[tuple[bool, str]]) -> list[str]:
    """'**Target met? yes|no** (subject):' then one 'met'/'MISSED' line per check."""
    met = all(ok for ok, _ in checks)
    head = f"**Target met? {'yes' if met else 'no'}**" + (f" ({subject}):" if subject else ":")
    return [head, ""] + [f"- {'met' if ok else 'MISSED'}: {text}" for ok, text in checks]

# The workspace_growth targets (issue 2): peak = final size plus at most the
# rounding of the final size up to the 2 MiB mapping granularity; every
# resize under 0.5 ms of host time, none waiting for the queued work; the
# base address never moves.
GRANULE = 2 * MIB
MAX_RESIZE_MS = 0.5
VMMALLOC_WORKSPACE = "vmmalloc-workspace"


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
    lines = checklist(VMMALLOC_WORKSPACE, checks)

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


# The alloc_latency targets: on a warm cache, vmmalloc's allocate+free pair
# takes at most 100 ns (median) single-threaded at every size, makes no
# driver call, and with 8 threads vmmalloc serves at least 4x its own
# one-thread pairs per second (the hot path shares nothing) and at least 10x
# the total pairs per second of PyTorch's caching allocator.
VMMALLOC = "vmmalloc"
TORCH_CACHING = "torch-caching"
MAX_NS_PER_PAIR = 100.0
MT_THREADS = 8
MIN_MT_SPEEDUP = 10.0
MIN_MT_SCALING = 4.0


def _alloc_latency_pivot(rows: list[dict], threads: int, field: str, title: str) -> list[str]:
    """Sizes down, systems across, for one thread count and one field."""
    systems: list[str] = []
    sizes: list[int] = []
    cells: dict[tuple[str, int], object] = {}
    for r in rows:
        if int(r["threads"]) != threads:
            continue
        name, size = r["system"], int(r["size_bytes"])
        if name not in systems:
            systems.append(name)
        if size not in sizes:
            sizes.append(size)
        cells[(name, size)] = r[field]
    if not systems:
        return []
    lines = [title, "", "| size | " + " | ".join(f"`{n}`" for n in systems) + " |",
             "|---:|" + "---:|" * len(systems)]
    for size in sorted(sizes):
        vals = []
        for n in systems:
            v = cells.get((n, size))
            vals.append("-" if v is None else fmt_value(field, v))
        lines.append(f"| {fmt_bytes(size)} | " + " | ".join(vals) + " |")
    return lines + [""]


def alloc_latency_verdict(doc: dict) -> list[str]:
    """The 'target met?' lines of alloc_latency, computed from the rows."""
    rows = doc.get("rows", [])
    vm = [r for r in rows if r.get("system") == VMMALLOC]
    if not vm:
        return [f"**Target met? no**: this run has no `{VMMALLOC}` row."]
    by = {(r["system"], int(r["size_bytes"]), int(r["threads"])): r for r in rows}
    sizes = sorted({int(r["size_bytes"]) for r in vm})
    checks: list[tuple[bool, str]] = []

    for size in sizes:
        r = by.get((VMMALLOC, size, 1))
        if r is None:
            checks.append((False, f"{fmt_bytes(size)}, 1 thread: not measured"))
            continue
        ns = float(r["ns_per_pair_median"])
        checks.append((ns <= MAX_NS_PER_PAIR,
                       f"{fmt_bytes(size)}, 1 thread: {ns:,.1f} ns per pair "
                       f"(target <= {MAX_NS_PER_PAIR:.0f} ns)"))

    calls = [(int(r["size_bytes"]), int(r["threads"]), r.get("driver_calls_per_pair")) for r in vm]
    unmeasured = [c for c in calls if c[2] is None]
    calling = [c for c in calls if c[2] is not None and float(c[2]) > 0]
    if unmeasured:
        checks.append((False, f"driver calls per pair not measured in {len(unmeasured)} "
                              f"`{VMMALLOC}` row(s)"))
    elif calling:
        worst = max(calling, key=lambda c: float(c[2]))
        checks.append((False, f"driver calls on cache hits in {len(calling)} of {len(calls)} rows "
                              f"(most: {float(worst[2]):.4g} per pair at {fmt_bytes(worst[0])}, "
                              f"{worst[1]} threads)"))
    else:
        checks.append((True, f"no driver call on a cache hit: 0 per pair in all {len(calls)} "
                             f"`{VMMALLOC}` rows"))

    for size in sizes:
        r = by.get((VMMALLOC, size, MT_THREADS))
        t = by.get((TORCH_CACHING, size, MT_THREADS))
        label = f"{fmt_bytes(size)}, {MT_THREADS} threads"
        if r is None or t is None:
            missing = VMMALLOC if r is None else TORCH_CACHING
            checks.append((False, f"{label}: no `{missing}` row to compare"))
            continue
        mine, theirs = float(r["pairs_per_s_total"]), float(t["pairs_per_s_total"])
        one = by.get((VMMALLOC, size, 1))
        if one is not None:
            alone = float(one["pairs_per_s_total"])
            scaling = mine / alone if alone > 0 else float("inf")
            checks.append((scaling >= MIN_MT_SCALING,
                           f"{label}: {scaling:.1f}x one thread's {alone:,.0f} pairs/s "
                           f"(target >= {MIN_MT_SCALING:.0f}x)"))
        ratio = mine / theirs if theirs > 0 else float("inf")
        checks.append((ratio >= MIN_MT_SPEEDUP,
                       f"{label}: {mine:,.0f} pairs/s, {ratio:,.1f}x `{TORCH_CACHING}`'s "
                       f"{theirs:,.0f} (target >= {MIN_MT_SPEEDUP:.0f}x)"))

    lines = checklist(VMMALLOC, checks)
    lines.append("")
    lines += _alloc_latency_pivot(rows, 1, "ns_per_pair_median",
                                  "Median ns per allocate+free pair, 1 thread:")
    lines += _alloc_latency_pivot(rows, MT_THREADS, "pairs_per_s_total",
                                  f"Total pairs per second, {MT_THREADS} threads:")
    return lines


# The replay targets: vmmalloc's ratio (peak physical / peak live) at most
# REPLAY_GPT2_MAX_RATIO on the GPT-2 trace and REPLAY_MAX_RATIO on
# every other trace, and below every PyTorch configuration on each trace.
REPLAY_VMMALLOC = "vmmalloc"
REPLAY_GPT2_TRACE = "gpt2-train"
REPLAY_GPT2_MAX_RATIO = 1.015
REPLAY_MAX_RATIO = 1.02
REPLAY_TORCH_SYSTEMS = ("torch-default", "torch-expandable", "torch-cudamallocasync")


def replay_verdict(doc: dict) -> list[str]:
    """Per trace: the ratios side by side, and whether vmmalloc meets its targets."""
    vmm = REPLAY_VMMALLOC
    traces: list[str] = []
    by_trace: dict[str, dict[str, dict]] = {}
    for r in doc.get("rows", []):
        t = str(r["trace"])
        if t not in by_trace:
            traces.append(t)
            by_trace[t] = {}
        by_trace[t][str(r["system"])] = r
    systems = [s for s in (*REPLAY_TORCH_SYSTEMS, vmm) if any(s in by_trace[t] for t in traces)]
    for t in traces:
        systems += [s for s in by_trace[t] if s not in systems]

    lines = ["Ratio (peak physical / peak live) by trace:", ""]
    lines.append("| trace | peak live | " + " | ".join(f"`{s}`" for s in systems) + " |")
    lines.append("|---|---:|" + "---:|" * len(systems))
    for t in traces:
        live = next(iter(by_trace[t].values()))["peak_live_bytes"]
        cells = [f"{float(by_trace[t][s]['ratio']):.4f}" if s in by_trace[t] else "-" for s in systems]
        lines.append(f"| {t} | {fmt_bytes(int(live))} | " + " | ".join(cells) + " |")
    lines.append("")

    checks: list[tuple[bool, str]] = []
    for t in traces:
        limit = REPLAY_GPT2_MAX_RATIO if t == REPLAY_GPT2_TRACE else REPLAY_MAX_RATIO
        vm = by_trace[t].get(vmm)
        if vm is None:
            checks.append((False, f"{t}: no `{vmm}` row in this run"))
            continue
        ratio = float(vm["ratio"])
        checks.append((ratio <= limit, f"{t}: `{vmm}` ratio {ratio:.4f} (target <= {limit})"))
        missing = [s for s in REPLAY_TORCH_SYSTEMS if s not in by_trace[t]]
        if missing:
            checks.append((False, f"{t}: no row for {', '.join(f'`{s}`' for s in missing)} to compare with"))
        torch_rows = [by_trace[t][s] for s in REPLAY_TORCH_SYSTEMS if s in by_trace[t]]
        if torch_rows:
            best = min(torch_rows, key=lambda r: float(r["ratio"]))
            below = all(ratio < float(r["ratio"]) for r in torch_rows)
            peak = int(vm["peak_physical_bytes"])
            vs = ", ".join(f"`{r['system']}` {float(r['ratio']):.4f}"
                           + (f" ({int(r['peak_physical_bytes']) / peak:.3f}x vmmalloc's peak)" if peak > 0 else "")
                           for r in torch_rows)
            checks.append((below, f"{t}: `{vmm}` {ratio:.4f} "
                                  f"{'below' if below else 'NOT below'} every PyTorch configuration "
                                  f"(best `{best['system']}` {float(best['ratio']):.4f}; {vs})"))
    met = bool(checks) and all(ok for ok, _ in checks)
    lines += [f"**Target met? {'yes' if met else 'no'}** ({vmm}: ratio <= {REPLAY_GPT2_MAX_RATIO} on "
              f"{REPLAY_GPT2_TRACE}, <= {REPLAY_MAX_RATIO} on the other traces, and below every PyTorch "
              "configuration on each trace):", ""]
    lines += [f"- {'met' if ok else 'MISSED'}: {text}" for ok, text in checks]
    return lines


# The torch_workspace targets (issue 4): `vmmalloc-workspace` holds at most
# the final size rounded up to 2 MiB, every resize under 0.5 ms, none waiting,
# its slowest resize at least 5x faster than `torch-expandable`'s, address
# stable; `vmmalloc` (installed, del + torch.empty) holds at most the final
# size rounded up to 2 MiB, never waits, and every resize takes at most
# 0.5 ms and is at least 4x faster than `torch-expandable`'s slowest.
TORCH_WS_MIN_SPEEDUP = 5.0
TORCH_WS_INSTALLED_MIN_SPEEDUP = 4.0


def torch_workspace_verdict(doc: dict) -> list[str]:
    rows = {r.get("system"): r for r in doc.get("rows", [])}
    checks: list[tuple[bool, str]] = []
    ws = rows.get(VMMALLOC_WORKSPACE)
    exp = rows.get("torch-expandable")
    if ws is None:
        checks.append((False, f"no `{VMMALLOC_WORKSPACE}` row in this run"))
    else:
        final, peak = int(ws["final_bytes"]), int(ws["peak_device_bytes"])
        allowed = round_up(final, GRANULE)
        slowest = float(ws["max_resize_ms"])
        checks.append((peak <= allowed, f"`{VMMALLOC_WORKSPACE}`: peak {fmt_bytes(peak)} ({peak} B) vs "
                                        f"final size rounded up to 2 MiB ({allowed} B)"))
        checks.append((all(float(x) < MAX_RESIZE_MS for x in ws["resize_ms"]),
                       f"`{VMMALLOC_WORKSPACE}`: every resize under {MAX_RESIZE_MS} ms "
                       f"(slowest {slowest:.3f} ms)"))
        checks.append((not ws["waited_for_queue"], f"`{VMMALLOC_WORKSPACE}`: "
                       + ("no resize waited for the queued work" if not ws["waited_for_queue"]
                          else "a resize waited for the queued work")))
        checks.append((bool(ws["address_stable"]), f"`{VMMALLOC_WORKSPACE}`: base address "
                       + ("unchanged" if ws["address_stable"] else "moved")))
        if exp is None:
            checks.append((False, "no `torch-expandable` row to compare with"))
        else:
            theirs = float(exp["max_resize_ms"])
            ratio = theirs / slowest if slowest > 0 else float("inf")
            checks.append((ratio >= TORCH_WS_MIN_SPEEDUP,
                           f"`{VMMALLOC_WORKSPACE}` slowest resize {slowest:.3f} ms, {ratio:.1f}x faster "
                           f"than `torch-expandable`'s {theirs:.3f} ms (target >= {TORCH_WS_MIN_SPEEDUP:.0f}x)"))
    vm = rows.get(VMMALLOC)
    if vm is None:
        checks.append((False, f"no `{VMMALLOC}` row in this run"))
    else:
        final, peak = int(vm["final_bytes"]), int(vm["peak_device_bytes"])
        allowed = round_up(final, GRANULE)
        checks.append((peak <= allowed, f"`{VMMALLOC}`: peak {fmt_bytes(peak)} ({peak} B) vs final size "
                                        f"rounded up to 2 MiB ({allowed} B)"))
        checks.append((not vm["waited_for_queue"], f"`{VMMALLOC}`: "
                       + ("no resize waited for the queued work" if not vm["waited_for_queue"]
                          else "a resize waited for the queued work")))
        slowest = float(vm["max_resize_ms"])
        checks.append((all(float(x) <= MAX_RESIZE_MS for x in vm["resize_ms"]),
                       f"`{VMMALLOC}`: every resize at most {MAX_RESIZE_MS} ms "
                       f"(slowest {slowest:.3f} ms)"))
        if exp is not None:
            theirs = float(exp["max_resize_ms"])
            ratio = theirs / slowest if slowest > 0 else float("inf")
            checks.append((ratio >= TORCH_WS_INSTALLED_MIN_SPEEDUP,
                           f"`{VMMALLOC}` slowest resize {slowest:.3f} ms, {ratio:.1f}x faster than "
                           f"`torch-expandable`'s {theirs:.3f} ms "
                           f"(target >= {TORCH_WS_INSTALLED_MIN_SPEEDUP:.0f}x)"))
    return checklist("", checks)


# The torch_train targets (issue 4): vmmalloc's tokens/s at least 0.99x
# torch-default's (medians), its peak device memory at most torch-expandable's.
TORCH_TRAIN_MIN_SPEED = 0.99


def torch_train_verdict(doc: dict) -> list[str]:
    rows = {r.get("system"): r for r in doc.get("rows", [])}
    vm, default, exp = rows.get(VMMALLOC), rows.get("torch-default"), rows.get("torch-expandable")
    checks: list[tuple[bool, str]] = []
    if vm is None:
        checks.append((False, f"no `{VMMALLOC}` row in this run"))
    if vm is not None and default is not None:
        ratio = float(vm["tokens_per_s"]) / float(default["tokens_per_s"])
        checks.append((ratio >= TORCH_TRAIN_MIN_SPEED,
                       f"tokens/s {float(vm['tokens_per_s']):,.0f}, {ratio:.4f}x `torch-default`'s "
                       f"{float(default['tokens_per_s']):,.0f} (target >= {TORCH_TRAIN_MIN_SPEED})"))
    elif vm is not None:
        checks.append((False, "no `torch-default` row to compare with"))
    if vm is not None and exp is not None:
        mine, theirs = int(vm["peak_device_bytes"]), int(exp["peak_device_bytes"])
        checks.append((mine <= theirs, f"peak device memory {fmt_bytes(mine)} vs `torch-expandable`'s "
                                       f"{fmt_bytes(theirs)} (target <=)"))
    elif vm is not None:
        checks.append((False, "no `torch-expandable` row to compare with"))
    return checklist(VMMALLOC, checks)


# The preload targets (issue 5): under the interposer, at least 0.95x the
# caching allocator's tokens/s, with peak device memory at most its peak.
PRELOAD_MIN_SPEED = 0.95


def preload_verdict(doc: dict) -> list[str]:
    rows = {r.get("system"): r for r in doc.get("rows", [])}
    vm, default = rows.get("vmmalloc-preload"), rows.get("torch-default")
    checks: list[tuple[bool, str]] = []
    if vm is None or default is None:
        checks.append((False, "this run lacks a `vmmalloc-preload` or a `torch-default` row"))
    else:
        ratio = float(vm["tokens_per_s"]) / float(default["tokens_per_s"])
        checks.append((ratio >= PRELOAD_MIN_SPEED,
                       f"tokens/s {float(vm['tokens_per_s']):,.0f}, {ratio:.4f}x `torch-default`'s "
                       f"{float(default['tokens_per_s']):,.0f} (target >= {PRELOAD_MIN_SPEED})"))
        mine, theirs = int(vm["peak_device_bytes"]), int(default["peak_device_bytes"])
        checks.append((mine <= theirs, f"peak device memory {fmt_bytes(mine)} vs `torch-default`'s "
                                       f"{fmt_bytes(theirs)} (target <=)"))
    return checklist("vmmalloc-preload", checks)


# The ddp_train targets (issue 8): vmmalloc's tokens/s at least 0.98x
# torch-default's (medians, all ranks), its peak (largest rank) at most
# torch-expandable's.
DDP_MIN_SPEED = 0.98


def ddp_train_verdict(doc: dict) -> list[str]:
    rows = {r.get("system"): r for r in doc.get("rows", [])}
    vm, default, exp = rows.get(VMMALLOC), rows.get("torch-default"), rows.get("torch-expandable")
    checks: list[tuple[bool, str]] = []
    if vm is None or default is None or exp is None:
        checks.append((False, "this run lacks a `vmmalloc`, `torch-default` or `torch-expandable` row"))
    else:
        ratio = float(vm["tokens_per_s"]) / float(default["tokens_per_s"])
        checks.append((ratio >= DDP_MIN_SPEED,
                       f"tokens/s {float(vm['tokens_per_s']):,.0f}, {ratio:.4f}x `torch-default`'s "
                       f"{float(default['tokens_per_s']):,.0f} (target >= {DDP_MIN_SPEED})"))
        mine, theirs = int(vm["peak_device_bytes_max_rank"]), int(exp["peak_device_bytes_max_rank"])
        checks.append((mine <= theirs, f"peak device memory (largest rank) {fmt_bytes(mine)} vs "
                                       f"`torch-expandable`'s {fmt_bytes(theirs)} (target <=)"))
    return checklist(VMMALLOC, checks)


# The sleep_wake targets (issue 22): vmmalloc at >= 0.9x the link limit
# (`pinned-copy`) both ways, copies at most 1.01x the live bytes, device
# memory after sleep at most what untagged work holds + 64 MiB (here: the
# live and cached bytes under the tag are all given back), bytes kept.
SLEEP_MIN_BANDWIDTH = 0.9


def sleep_wake_verdict(doc: dict) -> list[str]:
    rows = {r.get("system"): r for r in doc.get("rows", [])}
    vm, link = rows.get(VMMALLOC), rows.get("pinned-copy")
    checks: list[tuple[bool, str]] = []
    if vm is None or link is None:
        checks.append((False, "this run lacks a `vmmalloc` or a `pinned-copy` row"))
    else:
        for way in ("sleep", "wake"):
            mine, theirs = float(vm[f"{way}_GBps"]), float(link[f"{way}_GBps"])
            checks.append((mine >= SLEEP_MIN_BANDWIDTH * theirs,
                           f"{way} {mine:.1f} GB/s, {mine / theirs:.3f}x `pinned-copy`'s "
                           f"{theirs:.1f} GB/s (target >= {SLEEP_MIN_BANDWIDTH})"))
        copied, live = int(vm["bytes_copied"]), int(vm["live_bytes"])
        checks.append((copied <= 1.01 * live, f"copied {fmt_bytes(copied)} for {fmt_bytes(live)} live "
                                              f"(target <= 1.01x)"))
        freed = int(vm["device_bytes_freed"])
        checks.append((freed >= live, f"device memory freed by the sleep {fmt_bytes(freed)} "
                                      f"(target >= the live bytes: cached ones go too)"))
        checks.append((bool(vm["data_ok"]), "every tensor's bytes kept across the cycles"))
    return checklist(VMMALLOC, checks)


# The rl_colocate targets (issue 22): with each idle phase asleep, the peak
# is at most the larger phase's peak + 10%; losses and generated tokens are
# those of the run that never sleeps; the decode graph is never recaptured.
RL_MAX_PEAK_OVER_PHASE = 1.10


def rl_colocate_verdict(doc: dict) -> list[str]:
    rows = {r.get("system"): r for r in doc.get("rows", [])}
    slept = rows.get("vmmalloc-sleep")
    checks: list[tuple[bool, str]] = []
    if slept is None:
        checks.append((False, "this run lacks a `vmmalloc-sleep` row"))
    else:
        peak, phase = int(slept["peak_device_bytes"]), int(slept["larger_phase_peak"])
        checks.append((peak <= RL_MAX_PEAK_OVER_PHASE * phase,
                       f"peak {fmt_bytes(peak)}, {peak / phase:.3f}x the larger phase's "
                       f"{fmt_bytes(phase)} (target <= {RL_MAX_PEAK_OVER_PHASE})"))
        checks.append((bool(slept.get("same_losses")), "losses identical to the run that never sleeps"))
        checks.append((bool(slept.get("same_tokens")), "generated tokens identical"))
        checks.append((int(slept["graph_recaptures"]) == 0,
                       f"graph recaptures {slept['graph_recaptures']} (target 0)"))
    return checklist("`vmmalloc-sleep`", checks)


# The torch_compile targets (issue 20): vmmalloc's tokens/s >= 0.99x
# torch-default's, its peak <= torch-expandable's, same outputs.
COMPILE_MIN_SPEED = 0.99


def torch_compile_verdict(doc: dict) -> list[str]:
    rows = {r.get("system"): r for r in doc.get("rows", [])}
    vm, ref, exp = rows.get(VMMALLOC), rows.get("torch-default"), rows.get("torch-expandable")
    checks: list[tuple[bool, str]] = []
    if vm is None or ref is None or exp is None:
        checks.append((False, "this run lacks a `vmmalloc`, `torch-default` or `torch-expandable` row"))
    else:
        mine, theirs = float(vm["tokens_per_s"]), float(ref["tokens_per_s"])
        checks.append((mine >= COMPILE_MIN_SPEED * theirs,
                       f"{mine:,.0f} tokens/s, {mine / theirs:.3f}x `torch-default`'s {theirs:,.0f} "
                       f"(target >= {COMPILE_MIN_SPEED})"))
        peak, exp_peak = int(vm["peak_device_bytes"]), int(exp["peak_device_bytes"])
        checks.append((peak <= exp_peak, f"peak {fmt_bytes(peak)} vs `torch-expandable`'s "
                                         f"{fmt_bytes(exp_peak)} (target <=)"))
        checks.append((bool(vm.get("outputs_match")), "outputs equal to `torch-default`'s"))
    return checklist(VMMALLOC, checks)


VERDICTS = {
    "rl_colocate": rl_colocate_verdict,
    "torch_compile": torch_compile_verdict,
    "sleep_wake": sleep_wake_verdict,
    "ddp_train": ddp_train_verdict,
    "preload": preload_verdict,
    "workspace_growth": workspace_growth_verdict,
    "alloc_latency": alloc_latency_verdict,
    "replay": replay_verdict,
    "torch_workspace": torch_workspace_verdict,
    "torch_train": torch_train_verdict,
}
