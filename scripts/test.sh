#!/usr/bin/env bash
# Set everything up and run the whole test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$here/scripts/bootstrap.sh"
cd "$here"
tests=(tests)
if python -c 'import snakemake_storage_plugin_resutil' 2>/dev/null; then
  tests+=(snakemake_plugin/tests)
fi
if [ "$#" -gt 0 ]; then tests=("$@"); fi
exec python -m pytest -n 2 -q "${tests[@]}"
