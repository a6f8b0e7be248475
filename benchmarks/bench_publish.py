"""``resutil push -A`` over 1,000 small experiments that are already pushed (local backend).

Every one is checked (its run id and manifest against its sidecar, its files against its
manifest by size and time) and none moves. Target: under 3 s. Reference, in the same run:
``cp -r`` of the same results folder (what copying them again would cost), and the first
``push -A`` that uploads them all.

    python benchmarks/bench_publish.py [--count 1000] [--files 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resutil.metadata import ExpMeta, write_meta  # noqa: E402
from resutil.naming import new_run_id  # noqa: E402
from resutil.workspace import Workspace  # noqa: E402

TARGET_S = 3.0


def resutil_cmd() -> list[str]:
    here = Path(sys.executable).with_name("resutil")
    return [str(here)] if here.exists() else [sys.executable, "-m", "resutil"]


def timed(cmd: list[str], cwd: Path, ok_codes=(0,)) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode not in ok_codes:
        raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr[-2000:]}")
    return took


def make_project(base: Path, count: int, files: int) -> Path:
    root = base / "proj"
    root.mkdir()
    subprocess.run([*resutil_cmd(), "init", "--project", "Bench", "--results-dir", "results",
                    "--storage", "local", "--path", str(base / "remote"), "--yes"],
                   cwd=root, check=True, capture_output=True)
    ws = Workspace(root / "results")
    t0 = datetime(2025, 1, 1)
    for i in range(count):
        name = ws.create(f"exp-{i}", t0 + timedelta(minutes=i)).name
        folder = ws.path(name)
        for k in range(files):
            (folder / f"out_{k}.csv").write_text(f"step,value\n{i},{k}\n" * (20 + k))
        now = (t0 + timedelta(minutes=i)).isoformat()
        write_meta(folder, ExpMeta(name=name, comment=f"exp-{i}", run_id=new_run_id(),
                                   status="finished", started_at=now, ended_at=now,
                                   environment={"host": "bench"}))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--files", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="resutil-bench-publish-"))
    try:
        root = make_project(base, args.count, args.files)
        first = timed([*resutil_cmd(), "push", "-A", "-j", "4"], root)
        again, copies = [], []
        for i in range(args.repeat):
            again.append(timed([*resutil_cmd(), "push", "-A", "-j", "4"], root))
            dest = base / f"copy-{i}"
            copies.append(timed(["cp", "-r", str(root / "results"), str(dest)], base))
            shutil.rmtree(dest)
        up, cp = statistics.median(again), statistics.median(copies)
        print(f"{args.count} experiments x {args.files} files, local backend, "
              f"medians of {args.repeat}")
        print(f"  first push -A (uploads all)   {first:7.2f} s")
        print(f"  push -A, all up to date       {up:7.2f} s   target < {TARGET_S:.0f} s: "
              f"{'PASS' if up < TARGET_S else 'FAIL'}")
        print(f"  cp -r of the results folder   {cp:7.2f} s   push -A up to date = {up / cp:.2f}x cp -r")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
