#!/usr/bin/env bash
# The example pipeline end to end on the local backend: data -> features -> train -> evaluate.
# Each step becomes an experiment in example_pipeline/results/, pushed to example_pipeline/remote/.
# Run it again and every step is reused; edit a step's params and only it and what follows rerun.
#
# Usage: ./example_pipeline/run.sh [extra args for `resutil pipeline run`]
# Uses the resutil on PATH (after `pip install -e .`), else the repository's .venv (made if missing).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

if command -v resutil >/dev/null 2>&1 && resutil pipeline --help >/dev/null 2>&1; then
  resutil="$(command -v resutil)"
else
  if [ ! -x "$repo/.venv/bin/resutil" ]; then
    echo "Setting up $repo/.venv (python -m venv; pip install -e .)"
    "${PYTHON:-python3}" -m venv "$repo/.venv"
    "$repo/.venv/bin/python" -m pip install -q -e "$repo"
  fi
  resutil="$repo/.venv/bin/resutil"
fi
# The steps run with the Python that runs resutil; they need numpy.
py="$(head -n 1 "$resutil" | sed -e 's/^#! *//' -e 's/ .*//')"
[ -x "$py" ] || py="$(dirname "$resutil")/python"
if ! "$py" -c "import numpy" >/dev/null 2>&1; then
  echo "Installing numpy for $py (the example's only extra dependency)"
  "$py" -m pip install -q numpy
fi

cd "$here"
export RESUTIL_NO_INTERACTIVE=1
set -x
"$resutil" init --project example --results-dir results --storage local --path ./remote --yes --force
"$resutil" pipeline run -j 2 "$@"
"$resutil" list
{ set +x; } 2>/dev/null
if "$resutil" graph --help >/dev/null 2>&1; then
  set -x
  "$resutil" graph --format mermaid
  { set +x; } 2>/dev/null
else
  echo "(this resutil has no 'graph' command; skipping the lineage graph)"
fi
latest="$(ls -d results/*_evaluate 2>/dev/null | tail -n 1)"
if [ -n "$latest" ]; then
  echo "Metrics ($latest/metrics.json):"
  cat "$latest/metrics.json"
  echo "Plots: $latest/decision.svg, and loss.svg in the train step's folder"
fi
