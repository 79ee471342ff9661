#!/usr/bin/python3
"""Checks that the tree's layout still reads as the architecture (issue 15, Targets).

1. No file in host/ or sandbox/ is longer than MAX_LINES.
2. host/'s folders include one another one way: the folder graph built from
   `#include "host/<folder>/..."` lines has no cycle, and no folder includes one that comes
   later in host/meson.build's subdir() order (meson builds the layers in that order).
3. The processes' boundaries hold: shm/ (in both processes) includes nothing from host/ or
   sandbox/, and sandbox/ nothing from host/.

Prints every offence, with the include lines behind it, and exits 1 if there is one.
Usage: layout-test.py SOURCE_ROOT
"""
import pathlib
import re
import sys

MAX_LINES = 600

# Files allowed over MAX_LINES for now. Each entry is one line, to be deleted once the file
# is split; an entry whose file fits again is reported so it is not forgotten.
LONG_FILES_ALLOWED: set[str] = set()

# Folder edges of host/ allowed to close a cycle, as ("from", "to"). Empty: none today.
CYCLE_EDGES_ALLOWED: set[tuple[str, str]] = set()

INCLUDE = re.compile(r'^\s*#\s*include\s+["<]((host|sandbox|shm)/[^">]+)[">]')
SOURCE_SUFFIXES = {".h", ".hpp", ".c", ".cc", ".cpp"}


def source_files(folder: pathlib.Path):
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES)


def includes(path: pathlib.Path):
    """Yields (line number, included path) for each include of a project header."""
    for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        m = INCLUDE.match(line)
        if m:
            yield line_no, m.group(1)


def long_files(root: pathlib.Path, problems: list[str], notes: list[str]) -> None:
    for top in ("host", "sandbox"):
        for path in sorted(p for p in (root / top).rglob("*") if p.is_file()):
            name = path.relative_to(root).as_posix()
            count = path.read_bytes().count(b"\n")
            if count > MAX_LINES and name not in LONG_FILES_ALLOWED:
                problems.append(f"{name}: {count} lines, more than {MAX_LINES}")
            elif count <= MAX_LINES and name in LONG_FILES_ALLOWED:
                notes.append(f"{name} has {count} lines now: remove it from LONG_FILES_ALLOWED")
    for name in sorted(LONG_FILES_ALLOWED):
        if not (root / name).exists():
            notes.append(f"{name} is gone: remove it from LONG_FILES_ALLOWED")


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """A cycle of the folder graph as [a, b, ..., a], or None (depth-first, three colours)."""
    state = {node: "new" for node in graph}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for to in sorted(graph[node]):
            if state.get(to) == "open":
                return stack[stack.index(to):] + [to]
            if state.get(to) == "new":
                found = visit(to)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if state[node] == "new":
            found = visit(node)
            if found:
                return found
    return None


def host_layers(root: pathlib.Path, problems: list[str]) -> None:
    host = root / "host"
    layers = re.findall(r"^subdir\('([\w-]+)'\)", (host / "meson.build").read_text(), re.M)
    rank = {name: i for i, name in enumerate(layers)}
    # graph[a][b]: the include lines ("file:line") by which folder a includes folder b.
    graph: dict[str, dict[str, list[str]]] = {name: {} for name in layers}
    for layer in layers:
        for path in source_files(host / layer):
            for line_no, target in includes(path):
                parts = target.split("/")
                if parts[0] != "host":
                    continue
                where = f"{path.relative_to(root).as_posix()}:{line_no}"
                if len(parts) < 3 or parts[1] not in rank:
                    problems.append(f"{where}: includes {target}, in no layer of host/meson.build")
                elif parts[1] != layer:
                    graph[layer].setdefault(parts[1], []).append(where)
    loose = sorted(p.name for p in host.iterdir() if p.is_file() and p.name != "meson.build")
    if loose:
        problems.append("files in host/ outside every layer: " + ", ".join(loose))

    checked = {a: {b: w for b, w in edges.items() if (a, b) not in CYCLE_EDGES_ALLOWED}
               for a, edges in graph.items()}
    cycle = find_cycle(checked)
    if cycle:
        problems.append("host/ folders include one another in a cycle: " +
                        " -> ".join(f"host/{name}" for name in cycle))
        for a, b in zip(cycle, cycle[1:]):
            problems.append(f"  host/{a} -> host/{b}: " + ", ".join(checked[a][b]))
    for a, edges in checked.items():
        for b, where in sorted(edges.items()):
            if rank[b] > rank[a]:
                problems.append(f"host/{a} includes host/{b}, a later layer in host/meson.build: " +
                                ", ".join(where))


def process_boundaries(root: pathlib.Path, problems: list[str]) -> None:
    forbidden = {"shm": ("host", "sandbox"), "sandbox": ("host",)}
    for top, never in forbidden.items():
        for path in source_files(root / top):
            for line_no, target in includes(path):
                if target.split("/")[0] in never:
                    problems.append(f"{path.relative_to(root).as_posix()}:{line_no}: {top}/ "
                                    f"includes {target}")


def main() -> int:
    root = pathlib.Path(sys.argv[1])
    problems: list[str] = []
    notes: list[str] = []
    long_files(root, problems, notes)
    host_layers(root, problems)
    process_boundaries(root, problems)
    for line in notes + problems:
        print(line)
    if not problems:
        print(f"layout ok: host/ and sandbox/ files within {MAX_LINES} lines "
              f"(allowed longer: {', '.join(sorted(LONG_FILES_ALLOWED)) or 'none'}); host/ folders "
              "include one way; shm/ and sandbox/ include no process above them")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
