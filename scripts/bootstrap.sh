#!/usr/bin/env bash
# Create .venv (if needed) and install resutil with every extra plus the test tools.
# Usage: source scripts/bootstrap.sh   (sets PATH to the venv's bin)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
if [ ! -x "$here/.venv/bin/python" ]; then
  "$py" -m venv "$here/.venv"
fi
"$here/.venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$here/.venv/bin/python" -m pip install -q -e "$here[all,test]"
# The Snakemake storage plugin is its own distribution (Snakemake needs Python >= 3.11).
if "$here/.venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  "$here/.venv/bin/python" -m pip install -q -e "$here[snakemake]" -e "$here/snakemake_plugin"
fi
# Graphviz's `dot` renders SVG/PNG graphs; optional (tests that need it skip without it).
if ! command -v dot >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq graphviz) >/dev/null 2>&1 || echo "note: could not install graphviz; SVG/PNG tests will be skipped"
fi
export PATH="$here/.venv/bin:$PATH"
