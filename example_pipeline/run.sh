#!/usr/bin/env bash
# The example pipeline end to end on the local backend: data -> features -> train -> evaluate.
# Each step becomes an experiment in example_pipeline/results/, pushed to example_pipeline/remote/.
# Run it again and every step is reused; edit a step's params and only it and what follows rerun.
# At the end it writes a static HTML report of the experiments (example_pipeline/resutil-report/).
#
# Usage: bash example_pipeline/run.sh [extra args for `resutil pipeline run`]
# It uses this repository's .venv/ (made if missing) and installs into it, nowhere else:
# resutil from this folder (pip install -e .) and numpy, the example's one dependency.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="$repo/.venv"

if [ ! -x "$venv/bin/python" ]; then
  echo "run.sh: creating $venv (${PYTHON:-python3} -m venv)"
  "${PYTHON:-python3}" -m venv "$venv"
fi
# This repository's resutil (not another one on PATH) and numpy, both in .venv.
if ! "$venv/bin/python" - "$repo" >/dev/null 2>&1 <<'PY'
import os, sys
import jinja2, numpy, resutil.pipeline
sys.exit(not os.path.abspath(resutil.__file__).startswith(os.path.abspath(sys.argv[1]) + os.sep))
PY
then
  echo "run.sh: installing into $venv: resutil (pip install -e $repo) and numpy"
  "$venv/bin/python" -m pip install -q -e "$repo" numpy
fi
resutil="$venv/bin/resutil"

cd "$here"
export RESUTIL_NO_INTERACTIVE=1
set -x
"$resutil" init --project example --results-dir results --storage local --path ./remote --yes --force
"$resutil" pipeline run -j 2 "$@"
"$resutil" list
"$resutil" graph --format mermaid
{ set +x; } 2>/dev/null
latest="$(ls -d results/*_evaluate 2>/dev/null | tail -n 1)"
if [ -n "$latest" ]; then
  echo "Metrics ($latest/metrics.json):"
  cat "$latest/metrics.json"
  echo "Plots: $latest/decision.svg, and loss.svg in the train step's folder"
fi
# A static HTML report of every experiment (metrics, lineage, plots): open its index.html.
index="$("$resutil" report -o resutil-report)"
echo "Report: $index"
