#!/usr/bin/env python3
"""Reliability figures: bench/results/reliability.json and the top of
docs/reliability.md, from real runs (never typed in).

Figures per run (docs/benchmarks.md and docs/reliability.md, bench
`reliability`):
  operations       random operations executed by tests/stress (vmm_stress)
  churn_operations allocations and frees by threads made and retired under
                   load (tests/stress/churn.cpp, host)
  fork_runs        children forked while threads allocate, each ended in
                   time (tests/misuse/fork_stress.cpp, host)
  adversarial_peers hostile-peer tests passed: IPC and live-socket peers that
                   stall, drip, never read, forge or are another user (host)
  faults_injected  driver-call faults injected by the fault sweep
                   (tests/conformance/fault_sweep_conformance.cpp), each at
                   its own position of the scripted workload
  fuzz_inputs      inputs executed by the libFuzzer targets (scripts/fuzz.sh)
  sanitizer_runs   test programs that ran clean under a sanitizer: CTest tests
                   of the ASan+UBSan / TSan builds (host), compute-sanitizer
                   runs (device)
  bytes_lost       handle, mapping and reservation bytes the backends still
                   held after teardown, summed over the stress and sweep runs
                   (must be 0)

Subcommands:

  host    runs, on any machine: vmm_stress (host backend), the host fault
          sweep, scripts/fuzz.sh, and the reliability tests of each sanitizer
          build given; writes a one-run results file.
            python3 bench/reliability.py host --build build --sanitizer-build build-asan \\
                --sanitizer-build build-tsan --out /tmp/reliability-host.json
  device  runs on the GPU machine (scripts/gpu_reliability.sh calls it): a
          large vmm_stress on the GPU, the GPU fault sweep, and the churn,
          misuse and sweep cases under compute-sanitizer memcheck.
  merge   FILE... -> bench/results/reliability.json: the last run of each
          backend over the files given (so merging the committed file with a
          new device run replaces the old device row), top-level device and
          driver of the device run, each run listed under "runs"; then
          rewrites docs/reliability.md's figures.
            python3 bench/reliability.py merge bench/results/reliability.json \
                OUT/reliability-device.json
  render  rewrites the figures block of docs/reliability.md from
          bench/results/reliability.json (--check: exit 1 if out of date).

A run whose checks fail (a stress mismatch, a sweep failure, a fuzzer crash,
a sanitizer report, bytes lost) makes the subcommand exit 1 after writing its
file, so a bad run cannot pass for a good one.

Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "reliability.json"
DOC = ROOT / "docs" / "reliability.md"
BEGIN = "<!-- reliability:begin -->"
END = "<!-- reliability:end -->"

# The CTest tests of a sanitizer build that make up its reliability runs.
SANITIZER_TESTS = r"fault sweep|fault injection|stress:|misuse|fuzz corpus|a fault at any"
ADVERSARIAL_TESTS = r"ipc peers|hostile|live socket|ipc: a peer"
SWEEP_TOTAL = re.compile(
    r"fault sweep \[(\w+)\] total: (\d+) faults injected, (\d+) reached the caller, (\d+) bytes lost")
FUZZ_LINE = re.compile(r"^fuzz: (\S+) (\d+) inputs in (\d+)s, rc (\d+)$", re.M)


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def log(msg: str) -> None:
    print(f"reliability: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: int, env: dict | None = None, cwd: pathlib.Path = ROOT):
    """Runs cmd; returns (rc, combined output). Never raises for a failing rc."""
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    try:
        p = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace")
        return p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out + f"\n(timed out after {timeout} s)"


# ------------------------------------------------------------------ pieces


def stress(build: pathlib.Path, backend: str, args: list[str], timeout: int) -> dict:
    exe = build / "tests" / "stress" / "vmm_stress"
    rc, out = run([str(exe), "--backend", backend, *args, "--json"], timeout)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith('{"tool": "vmm_stress"')]
    if rc == 77:
        raise SystemExit(f"reliability: vmm_stress --backend {backend}: skipped (no GPU)")
    if not rows:
        log(out[-4000:])
        raise SystemExit(f"reliability: vmm_stress gave no result (rc {rc})")
    r = rows[-1]
    r["ok"] = rc == 0 and r["mismatched_bytes"] == 0 and r["bytes_lost"] == 0 and r["errors"] == 0
    log(f"stress: {r['operations']} operations, {r['mismatched_bytes']} bytes mismatched, "
        f"{r['bytes_lost']} bytes lost, rc {rc}")
    if not r["ok"]:
        # The report (stderr under --json) says what is left and which check failed.
        r["report"] = [line for line in out.splitlines() if not line.startswith("{")][-40:]
        log("\n".join(r["report"]))
    return r


def churn(build: pathlib.Path, operations: int, timeout: int) -> dict:
    """Thread churn (tests/stress/churn.cpp): threads made and retired while
    they allocate, hand blocks over and free."""
    exe = build / "tests" / "stress" / "vmm_churn"
    rc, out = run([str(exe), "--slots", "8", "--operations", str(operations), "--per-thread", "1000",
                   "--json"], timeout)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith('{"tool": "vmm_churn"')]
    if not rows:
        log(out[-4000:])
        raise SystemExit(f"reliability: vmm_churn gave no result (rc {rc})")
    r = rows[-1]
    r["ok"] = rc == 0 and r["corrupt"] == 0 and r["errors"] == 0 and r["bytes_lost"] == 0
    log(f"churn: {r['operations']} operations by {r['threads']} threads, {r['bytes_lost']} bytes lost, "
        f"rc {rc}")
    return r


def fork_runs(build: pathlib.Path, forks: int, timeout: int) -> dict:
    """Forks while threads allocate (tests/misuse/fork_stress.cpp): every
    child must end (nothing, exit(), vmmalloc then exit(), exec)."""
    exe = build / "tests" / "misuse" / "vmm_fork_stress"
    rc, out = run([str(exe), "--iterations", str(forks), "--threads", "3", "--timeout-ms", "10000"],
                  timeout)
    m = re.search(r"fork stress: (\d+) forks.* (\d+) errors", out)
    hung = sum(int(x) for x in re.findall(r"/(\d+) hung", out))
    r = {"forks": int(m.group(1)) if m else 0, "hung": hung,
         "errors": int(m.group(2)) if m else None, "ok": rc == 0 and m is not None and hung == 0}
    log(f"fork stress: {r['forks']} forks, {hung} hung, rc {rc}")
    if not r["ok"]:
        log(out[-4000:])
    return r


def adversarial_peers(build: pathlib.Path, timeout: int) -> dict:
    """The hostile-peer tests (docs/reliability.md): IPC importers and
    exporters that stall, drip, never read, send forged descriptors or come
    from another user; live-socket clients that idle or read slowly; forged
    socket directories and snapshots seen by vmmctl. Counts the tests run."""
    junit = build / "peers-junit.xml"
    junit.unlink(missing_ok=True)
    rc, out = run(["ctest", "--test-dir", str(build), "-R", ADVERSARIAL_TESTS, "-E", "^gpu",
                   "--output-junit", str(junit), "--timeout", "600"], timeout)
    passed, failed, skipped = junit_counts(junit) if junit.exists() else (0, 1, 0)
    log(f"adversarial peers: {passed} tests passed, {failed} failed, rc {rc}")
    if failed:
        log(out[-4000:])
    return {"tests": passed, "failed": failed, "ok": rc == 0 and failed == 0 and passed > 0}


def fault_sweep(test_binary: pathlib.Path, timeout: int) -> dict:
    rc, out = run([str(test_binary), "[fault_sweep]"], timeout)
    m = SWEEP_TOTAL.search(out)
    if rc == 77:
        raise SystemExit(f"reliability: {test_binary.name}: skipped (no GPU)")
    if m is None:
        log(out[-4000:])
        raise SystemExit(f"reliability: the fault sweep printed no total (rc {rc})")
    r = {"backend": m.group(1), "faults_injected": int(m.group(2)),
         "reached_caller": int(m.group(3)), "bytes_lost": int(m.group(4)), "ok": rc == 0,
         "per_kind": [line for line in out.splitlines() if line.startswith("fault sweep [")]}
    log(f"fault sweep: {r['faults_injected']} faults injected, {r['bytes_lost']} bytes lost, rc {rc}")
    return r


def fuzz(seconds: int, build: str | None, timeout: int) -> dict:
    env = {"VMMALLOC_FUZZ_SECONDS": str(seconds)}
    if build:
        env["VMMALLOC_FUZZ_BUILD_DIR"] = build
    rc, out = run([str(ROOT / "scripts" / "fuzz.sh")], timeout, env=env)
    targets = {name: int(n) for name, n, _, _ in FUZZ_LINE.findall(out)}
    if not targets:
        log(out[-4000:])
    r = {"inputs": sum(targets.values()), "targets": targets, "seconds_each": seconds,
         "ok": rc == 0 and bool(targets)}
    log(f"fuzz: {r['inputs']} inputs over {len(targets)} targets, rc {rc}")
    return r


def junit_counts(path: pathlib.Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) of a CTest JUnit file."""
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests = int(suite.get("tests", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0)) + int(suite.get("disabled", 0))
    return tests - failed - skipped, failed, skipped


def sanitizer_ctest(build: pathlib.Path, timeout: int) -> dict:
    junit = build / "reliability-junit.xml"
    junit.unlink(missing_ok=True)
    jobs = os.environ.get("VMMALLOC_JOBS", str(os.cpu_count() or 2))
    cmd = ["ctest", "--test-dir", str(build), "-R", SANITIZER_TESTS, "-E", "^gpu",
           "--output-junit", str(junit), "-j", jobs, "--timeout", "1200"]
    if subprocess.run(["setarch", os.uname().machine, "-R", "true"], capture_output=True).returncode == 0:
        cmd = ["setarch", os.uname().machine, "-R", *cmd]  # as scripts/test.sh does
    rc, out = run(cmd, timeout)
    passed, failed, skipped = junit_counts(junit) if junit.exists() else (0, 1, 0)
    kind = cache_value(build, "VMMALLOC_SANITIZE") or "?"
    log(f"sanitizer build {build.name} ({kind}): {passed} passed, {failed} failed, rc {rc}")
    if failed:
        log(out[-4000:])
    return {"build": build.name, "sanitize": kind, "passed": passed, "failed": failed,
            "skipped": skipped, "ok": rc == 0 and failed == 0 and passed > 0}


def cache_value(build: pathlib.Path, key: str) -> str | None:
    try:
        for line in (build / "CMakeCache.txt").read_text().splitlines():
            if line.startswith(key + ":"):
                return line.split("=", 1)[1]
    except OSError:
        pass
    return None


def compute_sanitizer(build: pathlib.Path, tool: str, target: list[str], timeout: int) -> dict:
    exe = ["compute-sanitizer", "--tool", tool, "--error-exitcode", "1", "--report-api-errors", "no"]
    rc, out = run([*exe, *target], timeout, env={"VMM_TEST_TIME_SCALE": "8"})
    # memcheck and synccheck end with "ERROR SUMMARY: N errors"; racecheck with
    # "RACECHECK SUMMARY: H hazards displayed (N errors, W warnings)".
    m = (re.search(r"ERROR SUMMARY: (\d+) error", out)
         or re.search(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?", out))
    errors = int(m.group(1)) if m else None
    name = " ".join([tool, pathlib.Path(target[0]).name, *target[1:]])
    log(f"compute-sanitizer {name}: rc {rc}, errors {errors}")
    if rc != 0:
        log(out[-4000:])
    return {"run": name, "rc": rc, "errors": errors, "ok": rc == 0 and errors == 0}


def gpu_info() -> tuple[str, str | None]:
    rc, out = run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], 60)
    if rc != 0 or not out.strip():
        return "unknown GPU", None
    name, driver = [x.strip() for x in out.strip().splitlines()[0].split(",", 1)]
    return name, driver


# --------------------------------------------------------------- commands


def result_file(device: str, driver: str | None, command: str, row: dict, details: dict) -> dict:
    return {"bench": "reliability", "commit": os.environ.get("COMMIT") or git_commit(),
            "device": device, "driver": driver, "date": now_utc(), "command": command,
            "rows": [row], "details": details}


def write(path: pathlib.Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {path}")


def cmd_host(a) -> int:
    build = pathlib.Path(a.build).resolve()
    details = {}
    details["stress"] = stress(build, "host", shlex.split(a.stress_args), a.timeout)
    details["fault_sweep"] = fault_sweep(build / "tests" / "vmm_host_tests", a.timeout)
    details["fuzz"] = fuzz(a.fuzz_seconds, a.fuzz_build, a.timeout) if a.fuzz_seconds > 0 else {
        "inputs": 0, "targets": {}, "ok": True, "seconds_each": 0}
    details["sanitizers"] = [sanitizer_ctest(pathlib.Path(d).resolve(), a.timeout)
                             for d in a.sanitizer_build]
    details["churn"] = churn(build, a.churn_operations, a.timeout)
    details["fork"] = fork_runs(build, a.forks, a.timeout)
    details["adversarial_peers"] = adversarial_peers(build, a.timeout)
    row = {"system": "vmmalloc", "backend": "host",
           "churn_operations": details["churn"]["operations"],
           "fork_runs": details["fork"]["forks"],
           "adversarial_peers": details["adversarial_peers"]["tests"],
           "operations": details["stress"]["operations"],
           "faults_injected": details["fault_sweep"]["faults_injected"],
           "fuzz_inputs": details["fuzz"]["inputs"],
           "sanitizer_runs": sum(s["passed"] for s in details["sanitizers"]),
           "bytes_lost": details["stress"]["bytes_lost"] + details["fault_sweep"]["bytes_lost"] +
           details["churn"]["bytes_lost"]}
    command = "python3 bench/reliability.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    out = pathlib.Path(a.out).resolve()
    write(out, result_file("host", None, command, row, details))
    if out == RESULTS:
        render(RESULTS, check=False)
    return report_ok(details)


def cmd_device(a) -> int:
    build = pathlib.Path(a.build).resolve()
    gpu_tests = build / "tests" / "vmm_gpu_tests"
    details = {}
    details["stress"] = stress(build, "cuda", shlex.split(a.stress_args), a.timeout)
    details["fault_sweep"] = fault_sweep(gpu_tests, a.timeout)
    runs = []
    if not a.no_compute_sanitizer:
        for tool, target in (
                ("memcheck", [str(gpu_tests), "[churn]"]),
                ("memcheck", [str(gpu_tests), "[misuse]"]),
                ("memcheck", [str(gpu_tests), "[fault_sweep]"]),
                ("memcheck", [str(build / "tests" / "stress" / "vmm_stress"), "--backend", "cuda",
                              "--threads", "4", "--streams", "3", "--iterations", "300",
                              "--max-block", "16M", "--workspace", "128M"]),
                ("racecheck", [str(gpu_tests), "[churn]"]),
                ("synccheck", [str(gpu_tests), "[churn]"])):
            runs.append(compute_sanitizer(build, tool, target, a.timeout))
    details["compute_sanitizer"] = runs
    name, driver = gpu_info()
    row = {"system": "vmmalloc", "backend": "cuda",
           "operations": details["stress"]["operations"],
           "faults_injected": details["fault_sweep"]["faults_injected"],
           "fuzz_inputs": 0,
           "sanitizer_runs": sum(1 for r in runs if r["ok"]),
           "bytes_lost": details["stress"]["bytes_lost"] + details["fault_sweep"]["bytes_lost"]}
    command = "python3 bench/reliability.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    write(pathlib.Path(a.out), result_file(name, driver, command, row, details))
    return report_ok(details)


def report_ok(details: dict) -> int:
    bad = []
    for key, value in details.items():
        for part in value if isinstance(value, list) else [value]:
            if isinstance(part, dict) and not part.get("ok", True):
                bad.append(key)
    if bad:
        log("FAILED: " + ", ".join(sorted(set(bad))))
        return 1
    return 0


def runs_of(doc: dict) -> list[tuple[dict, dict]]:
    """(row, run) pairs of a results file: one per run it holds."""
    if "runs" in doc:
        return list(zip(doc["rows"], doc["runs"]))
    run_info = {"backend": doc["rows"][0].get("backend"), "device": doc["device"],
                "driver": doc["driver"], "commit": doc["commit"], "date": doc["date"],
                "command": doc["command"], "details": doc.get("details", {})}
    return [(doc["rows"][0], run_info)]


def cmd_merge(a) -> int:
    """Keeps the last run of each backend over the files given, in order."""
    by_backend: dict[str, tuple[dict, dict]] = {}
    for f in a.files:
        doc = json.loads(pathlib.Path(f).read_text())
        if doc.get("bench") != "reliability":
            raise SystemExit(f"reliability: {f} is not a reliability results file")
        for row, run_info in runs_of(doc):
            by_backend[row.get("backend", "?")] = (row, run_info)
    pairs = sorted(by_backend.values(), key=lambda p: p[1]["device"] != "host")  # host first
    device_runs = [r for _, r in pairs if r["device"] != "host"]
    top = device_runs[-1] if device_runs else pairs[-1][1]
    merged = {
        "bench": "reliability",
        "commit": top["commit"],
        "device": top["device"],
        "driver": top["driver"],
        "date": max(r["date"] for _, r in pairs),
        "command": "python3 bench/reliability.py merge " + " ".join(a.files),
        "rows": [row for row, _ in pairs],
        "runs": [r for _, r in pairs],
    }
    write(pathlib.Path(a.out), merged)
    render(pathlib.Path(a.out), check=False)
    return 0 if all(row["bytes_lost"] == 0 for row in merged["rows"]) else 1


def fmt_int(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def figures_block(doc: dict) -> str:
    pairs = runs_of(doc)
    lines = [BEGIN,
             "<!-- generated by bench/reliability.py from bench/results/reliability.json; "
             "do not edit -->",
             "",
             "| run | operations under stress | thread-churn operations | fork runs | "
             "adversarial peers | faults injected | inputs fuzzed | sanitizer runs | bytes lost |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = ("operations", "churn_operations", "fork_runs", "adversarial_peers", "faults_injected",
            "fuzz_inputs", "sanitizer_runs", "bytes_lost")
    for row, r in pairs:
        where = "host backend" if r["device"] == "host" else f"{r['device']} (driver {r['driver']})"
        # "-": a run made before that figure was counted.
        lines.append(f"| {where}, {r['date'][:10]}, commit {r['commit']} | " +
                     " | ".join(fmt_int(row[k]) if k in row else "-" for k in keys) + " |")
    total = {k: sum(r.get(k, 0) for r in doc["rows"]) for k in keys}
    if len(doc["rows"]) > 1:
        lines.append("| **all runs** | " + " | ".join(f"**{fmt_int(total[k])}**" for k in keys) + " |")
    if not any(r["device"] != "host" for _, r in pairs):
        lines += ["", "No device run is merged yet: the GPU figures come from "
                  "`scripts/gpu_reliability.sh` (see [Figures](#figures))."]
    lines.append(END)
    return "\n".join(lines)


def render(results: pathlib.Path, check: bool) -> int:
    doc = json.loads(results.read_text())
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"reliability: {DOC} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + figures_block(doc) + tail
    if check:
        if new != text:
            log(f"{DOC} is out of date: run python3 bench/reliability.py render")
            return 1
        return 0
    if new != text:
        DOC.write_text(new)
        log(f"rewrote the figures of {DOC}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("host", help="stress, sweep, fuzz and sanitizer runs on the host backend")
    h.add_argument("--build", default="build", help="the main build tree (default build)")
    h.add_argument("--sanitizer-build", action="append", default=[],
                   help="a sanitizer build tree whose reliability tests to run (repeatable)")
    h.add_argument("--stress-args", default="--threads 4 --streams 4 --iterations 25000 "
                   "--seconds 240 --max-block 4M --workspace 32M")
    h.add_argument("--fuzz-seconds", type=int, default=120, help="per fuzz target; 0 skips")
    h.add_argument("--churn-operations", type=int, default=1_000_000)
    h.add_argument("--forks", type=int, default=1000)
    h.add_argument("--fuzz-build", help="scripts/fuzz.sh's build tree (default build-fuzz)")
    h.add_argument("--timeout", type=int, default=3600, help="per piece, seconds")
    h.add_argument("--out", default=str(RESULTS))
    d = sub.add_parser("device", help="the GPU run (scripts/gpu_reliability.sh)")
    d.add_argument("--build", default="build-gpu")
    d.add_argument("--stress-args", default="--threads 16 --streams 8 --iterations 100000 "
                   "--seconds 150 --max-block 256M --workspace 2G")
    d.add_argument("--no-compute-sanitizer", action="store_true")
    d.add_argument("--timeout", type=int, default=420)
    d.add_argument("--out", required=True)
    m = sub.add_parser("merge", help="HOST.json DEVICE.json -> results file and docs")
    m.add_argument("files", nargs="+")
    m.add_argument("--out", default=str(RESULTS))
    r = sub.add_parser("render", help="rewrite docs/reliability.md's figures")
    r.add_argument("--check", action="store_true")
    a = p.parse_args()
    if a.command == "host":
        return cmd_host(a)
    if a.command == "device":
        return cmd_device(a)
    if a.command == "merge":
        return cmd_merge(a)
    return render(RESULTS, a.check)


if __name__ == "__main__":
    sys.exit(main())
