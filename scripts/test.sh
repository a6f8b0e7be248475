#!/usr/bin/env bash
# Set everything up and run the whole test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$here/scripts/bootstrap.sh"
cd "$here"
exec python -m pytest -n 2 -q "$@"
