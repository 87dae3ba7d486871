#!/usr/bin/env python3
"""Checks allocator/'s include graph against its layer order.

The library's folders are its layers, bottom up (docs/architecture.md):

    base < backend < record < vm < heap < observe < api < ipc < capi

A file may include headers of its own layer or a lower one, never a higher
one; a public header (include/vmmalloc/) counts as part of the layer that
implements it. And no two modules (a .hpp with its .cpp) may include each
other, directly or through others: the module graph has no cycle.

Prints each violation and exits 1, or prints a one-line summary and exits 0.
Usage: check_layers.py [REPO_ROOT]
"""
import pathlib
import re
import sys

LAYERS = ["base", "backend", "record", "vm", "heap", "observe", "api", "ipc", "capi"]

# Public headers, by the layer whose files implement them (value types and
# the C declarations sit at the bottom: every layer may use them).
PUBLIC = {
    "vmmalloc.h": "base",
    "export.h": "base",
    "config.hpp": "base",
    "errors.hpp": "base",
    "stats.hpp": "base",
    "tags.hpp": "base",
    "pool_checkpoint.hpp": "base",
    "snapshot.hpp": "observe",
    "allocator.hpp": "api",
    "workspace.hpp": "api",
    "peer_access.hpp": "api",
    "ipc.hpp": "ipc",
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module_of(rel):
    """allocator/heap/heap.cpp -> allocator/heap/heap; public headers are
    their own modules (include/vmmalloc/x)."""
    return str(pathlib.PurePosixPath(rel).with_suffix(""))


def layer_of(rel):
    parts = pathlib.PurePosixPath(rel).parts
    if parts[0] == "allocator":
        return parts[1] if len(parts) > 2 else None
    if parts[0] == "include":
        return PUBLIC.get(parts[-1])
    return None


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    files = sorted(
        p for p in (root / "allocator").rglob("*") if p.suffix in (".hpp", ".cpp", ".h")
    ) + sorted((root / "include" / "vmmalloc").glob("*"))
    problems = []
    edges = {}
    count = 0
    for path in files:
        rel = path.relative_to(root).as_posix()
        layer = layer_of(rel)
        if layer is None or layer not in LAYERS:
            problems.append(f"{rel}: not in a layer folder (layers: {', '.join(LAYERS)})"
                            if rel.startswith("allocator/") else
                            f"{rel}: public header missing from check_layers.py's PUBLIC table")
            continue
        for inc in INCLUDE.findall(path.read_text()):
            if inc.startswith("allocator/"):
                target = inc
            elif inc.startswith("vmmalloc/"):
                target = "include/" + inc
            else:
                continue
            count += 1
            if not (root / target).exists():
                problems.append(f"{rel}: includes {inc}, which does not exist")
                continue
            tl = layer_of(target)
            if tl is None or tl not in LAYERS:
                problems.append(f"{rel}: includes {inc}, which is in no layer")
                continue
            if LAYERS.index(tl) > LAYERS.index(layer):
                problems.append(f"{rel} ({layer}) includes {inc} ({tl}): a higher layer")
            a, b = module_of(rel), module_of(target)
            if a != b:
                edges.setdefault(a, set()).add(b)

    # Cycles in the module graph (depth-first search, colours).
    colour = {}
    stack = []

    def visit(n):
        colour[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if colour.get(m) == 1:
                cyc = stack[stack.index(m):] + [m]
                problems.append("include cycle: " + " -> ".join(cyc))
            elif m not in colour:
                visit(m)
        stack.pop()
        colour[n] = 2

    for n in sorted(edges):
        if n not in colour:
            visit(n)

    for p in problems:
        print(p)
    if problems:
        print(f"check_layers: {len(problems)} problem(s)")
        return 1
    print(f"check_layers: {len(files)} files, {count} includes, layers {' < '.join(LAYERS)}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
