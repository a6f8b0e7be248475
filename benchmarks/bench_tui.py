#!/usr/bin/env python3
"""How long the terminal UI takes to open on 10,000 experiments.

Generates (with ``bench_lineage.generate``: seeded, 40 % local only, 30 % remote only, 30 %
both, 20,000 dependency edges, a small ``metrics.csv`` in each local folder) a project under
``benchmarks/work/tui/``, then opens the UI in a fresh Python process, headless through
Textual's ``App.run_test`` at 200x50, and measures from that process's first line (so
importing resutil and Textual counts) until:

* ``first``: the table shows the local experiments (the first screen);
* ``all``: it shows all ``--n`` experiments, the remote's listing included (the budget:
  under 1 s);
* ``metrics``: the metric columns are filled (local ones from folders, remote-only ones by
  ranged reads of their archives - here deliberately not zips, so each is a warning: what
  counts is that the table was usable long before).

Each is the median of ``--runs`` warm runs (the metadata and metrics caches filled by a
first, cold run, also reported), beside the reference ``resutil list`` of the same project
(a subprocess through the console script).

Usage::

    python benchmarks/bench_tui.py [--n 10000] [--edges 20000] [--runs 3] [--regen]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_lineage import add_project_args, generated_project, resutil_command  # noqa: E402

CHILD = r"""
import time
t0 = time.perf_counter()
import asyncio, json, sys
from pathlib import Path
from resutil.project import Project
from resutil.tui.app import ResutilApp

n = int(sys.argv[2])
marks = {}

async def main():
    app = ResutilApp(Project.load(Path(sys.argv[1])))
    async with app.run_test(size=(200, 50)) as pilot:
        while app.table.row_count == 0:
            await pilot.pause(0.005)
        marks["first"] = time.perf_counter() - t0
        marks["first_rows"] = app.table.row_count
        while app.table.row_count < n:
            await pilot.pause(0.005)
        marks["all"] = time.perf_counter() - t0
        while not app.loaded.is_set():
            await pilot.pause(0.01)
        await pilot.pause()
        marks["metrics"] = time.perf_counter() - t0
        marks["columns"] = len(app.table.columns)

asyncio.run(main())
print(json.dumps(marks))
"""


def open_ui(project: Path, n: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUTIL_")}
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(project), str(n)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the UI failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def list_time(project: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUTIL_")}
    t0 = time.perf_counter()
    subprocess.run([*resutil_command(), "list"], cwd=project, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_args(ap, HERE / "work" / "tui")
    ap.add_argument("--runs", type=int, default=3, help="warm runs (median)")
    ap.add_argument("--target", type=float, default=1.0, help="seconds until all rows show")
    args = ap.parse_args()

    project = generated_project(args)
    cache = project / "results" / ".resutil" / "cache"
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    cold = open_ui(project, args.n)
    runs = [open_ui(project, args.n) for _ in range(args.runs)]
    lists = [list_time(project) for _ in range(args.runs)]
    alls = ", ".join(f"{r['all']:.2f}" for r in runs)
    med = {k: statistics.median(r[k] for r in runs) for k in ("first", "all", "metrics")}
    ref = statistics.median(lists)
    print(f"cold (empty caches): first screen {cold['first']:.2f} s, all rows "
          f"{cold['all']:.2f} s, metrics {cold['metrics']:.2f} s")
    print(f"first screen ({runs[0]['first_rows']} local rows): median {med['first']:.2f} s")
    print(f"all {args.n} rows: median {med['all']:.2f} s of {args.runs} "
          f"({alls}); {med['all'] / args.target:.0%} "
          f"of {args.target:g} s; {med['all'] / ref:.2f}x resutil list ({ref:.2f} s)  "
          f"{'PASS' if med['all'] < args.target else 'FAIL'}")
    print(f"metrics filled ({runs[0]['columns']} columns): median {med['metrics']:.2f} s")
    sys.exit(0 if med["all"] < args.target else 1)


if __name__ == "__main__":
    main()
