#!/usr/bin/env bash
# Pastes the harness's generated table (benches/results/latest.md, written by
# overpass-bench) into README.md between the bench markers. Never edit the
# numbers by hand: rerun the harness and this script.
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-benches/results/latest.md}"
python3 - "$src" <<'PY'
import sys
src = open(sys.argv[1]).read()
# Drop the document title: the README has its own heading.
body = "\n".join(l for l in src.splitlines() if not l.startswith("# ")).strip()
body = body.replace("\n## ", "\n### ")
if body.startswith("## "):
    body = "#" + body
readme = open("README.md").read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
a, b = readme.index(begin) + len(begin), readme.index(end)
open("README.md", "w").write(readme[:a] + "\n" + body + "\n" + readme[b:])
PY
echo "README.md: performance section updated from $src"
