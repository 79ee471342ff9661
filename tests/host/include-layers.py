#!/usr/bin/env python3
"""Checks that host/'s folders include one another one way only.

The layers, from the bottom up, are the subdir() order in host/meson.build: a file in a layer
may include its own layer and the ones below it, never one above (that would be a cycle once
the layer above includes it back). Prints each offending include and exits 1.
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
host = root / "host"
layers = re.findall(r"^subdir\('([\w-]+)'\)", (host / "meson.build").read_text(), re.M)
rank = {name: i for i, name in enumerate(layers)}
include = re.compile(r'^\s*#\s*include\s+"host/([\w-]+)/([^"]+)"', re.M)

bad = []
for layer in layers:
    for path in sorted((host / layer).glob("*.[ch]*")):
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            m = include.match(line)
            if m and rank.get(m.group(1), -1) > rank[layer]:
                bad.append(f"{path.relative_to(root)}:{line_no}: host/{layer}/ includes "
                           f"host/{m.group(1)}/{m.group(2)}, a layer above it")
            elif m and m.group(1) not in rank:
                bad.append(f"{path.relative_to(root)}:{line_no}: host/{m.group(1)}/ is no layer "
                           f"of host/meson.build")
loose = [p.name for p in host.iterdir() if p.is_file() and p.name != "meson.build"]
if loose:
    bad.append("files in host/ outside every layer: " + ", ".join(sorted(loose)))
print("\n".join(bad) if bad else f"host/ layers include one way: {' -> '.join(layers)}")
sys.exit(1 if bad else 0)
