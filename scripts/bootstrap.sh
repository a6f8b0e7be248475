#!/usr/bin/env bash
# Create .venv (if needed) and install resutil with every extra plus the test tools into it.
# Usage: source scripts/bootstrap.sh   (sets PATH to the venv's bin)
#
# Everything goes into .venv/ in this repository; nothing is installed elsewhere, with two
# exceptions, both system packages and both only as root with apt-get (a fresh Debian CI
# machine): Chromium and its driver (`chromium`, `chromium-driver`), which the browser tests
# of `resutil report` need, are installed when missing (elsewhere those tests are skipped,
# saying why); RESUTIL_INSTALL_GRAPHVIZ=1 lets it run `apt-get install graphviz` for
# Graphviz's `dot`, which only the SVG/PNG tests need (they are skipped without).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
if [ ! -x "$here/.venv/bin/python" ]; then
  echo "bootstrap: creating $here/.venv ($py -m venv)"
  "$py" -m venv "$here/.venv"
fi
echo "bootstrap: installing into $here/.venv: pip (upgraded), resutil (editable) with its" \
     "extras [all,test] (cloud SDKs, graphviz bindings, pytest, test servers, numpy)"
"$here/.venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$here/.venv/bin/python" -m pip install -q -e "$here[all,test]"
# The Snakemake storage plugin is its own distribution (Snakemake needs Python >= 3.11);
# its tests run jobs through Snakemake's cluster-generic executor.
if "$here/.venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: installing into $here/.venv: snakemake, snakemake-storage-plugin-resutil" \
       "(editable) and its test extra (snakemake-executor-plugin-cluster-generic)"
  "$here/.venv/bin/python" -m pip install -q -e "$here[snakemake]" -e "$here/snakemake_plugin[test]"
fi
# Headless Chromium and chromedriver run the report's browser tests (Selenium is pointed at
# /usr/bin/chromium and /usr/bin/chromedriver, so it never downloads a browser or driver).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: apt-get install chromium chromium-driver (system-wide, as root: the" \
         "browser tests of resutil report need them)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
       chromium chromium-driver) >/dev/null 2>&1 \
      || echo "bootstrap: could not install chromium; the browser tests will be skipped"
  else
    echo "bootstrap: /usr/bin/chromium or /usr/bin/chromedriver is missing, so the browser" \
         "tests will be skipped (install chromium and chromium-driver, or run this as root" \
         "on Debian/Ubuntu)"
  fi
fi
# Graphviz's `dot` renders SVG/PNG graphs: a system package, so only when asked for.
if ! command -v dot >/dev/null 2>&1; then
  if [ "${RESUTIL_INSTALL_GRAPHVIZ:-}" = 1 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "bootstrap: RESUTIL_INSTALL_GRAPHVIZ=1: apt-get install graphviz (system-wide, as root)"
    (apt-get update -qq && apt-get install -y -qq graphviz) >/dev/null 2>&1 \
      || echo "bootstrap: could not install graphviz; the SVG/PNG tests will be skipped"
  else
    echo "bootstrap: Graphviz's dot is not installed, so the SVG/PNG tests will be skipped" \
         "(install graphviz yourself, or as root: RESUTIL_INSTALL_GRAPHVIZ=1 bash scripts/test.sh)"
  fi
fi
export PATH="$here/.venv/bin:$PATH"
