#!/usr/bin/env bash
# Set everything up and run the whole test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$here/scripts/bootstrap.sh"
cd "$here"
tests=(tests)
# Where bootstrap installed the Snakemake plugin (Python >= 3.11), its tests always run: a
# plugin that no longer imports fails them loudly instead of being left out.
if python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  tests+=(snakemake_plugin/tests)
fi
if [ "$#" -gt 0 ]; then tests=("$@"); fi
exec python -m pytest -n 2 -q "${tests[@]}"
