#!/usr/bin/env python3
"""How long ``resutil report`` takes for 1,000 experiments, beside ``resutil list``.

Generates (seeded) a project of ``--n`` (1,000) local experiments in a temporary folder,
made with resutil's own building blocks as ``bench_many.py`` makes them: pipeline-like
runs of four steps (data -> features -> train -> evaluate, each depending on the one
before), with a ``metrics.json`` (evaluate) or ``train.json`` (train) of a few numbers, a
log, a small PNG (train) and SVG (evaluate), metadata like a real run's (arguments, a
commit, ~60 package versions, a manifest) and one run in ten with uncommitted files.

Then it runs, as subprocesses through the console script (wall clock, medians of
``--repeat``): ``resutil report -o DIR`` with no cache (the lineage and metrics indexes
removed, as the first report in a clone), ``resutil report`` again (caches warm) and
``resutil list`` (caches warm) as the reference, and prints the seconds, the ratio to the
budget (``--target``, 5 s) and the ratio to ``list``. Nothing it generates is kept.

    python benchmarks/bench_report.py [--n 1000] [--repeat 3] [--target 5] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
import zlib
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_many import CPU, init, resutil_cmd, timed  # noqa: E402

from resutil.metadata import ExpMeta, Manifest, write_meta  # noqa: E402
from resutil.naming import new_run_id  # noqa: E402
from resutil.workspace import Workspace  # noqa: E402

SEED = 20250106
T0 = datetime(2025, 1, 1)
STEPS = ("data", "features", "train", "evaluate")
PACKAGES = {f"package-{i:02d}": f"{i % 7}.{i % 13}.{i % 5}" for i in range(60)}
COMMIT = "4572f99a5581acb74e67757481d4e16853af07ee"


def png(width: int, height: int, seed: int) -> bytes:
    """A small valid RGB PNG (a gradient), made without any imaging library."""
    rows = b"".join(b"\0" + bytes((x * 7 + seed) % 256 for x in range(width * 3))
                    for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def generate(root: Path, n: int) -> Path:
    """The project of ``n`` local experiments under ``root``; returns its folder."""
    rng = random.Random(SEED)
    proj = init(root / "proj", root / "remote", "BenchReport")
    ws = Workspace(proj / "results")
    previous = None
    for i in range(n):
        step = STEPS[i % len(STEPS)]
        when = T0 + timedelta(minutes=2 * i)
        name = ws.create(step, when).name
        folder = ws.path(name)
        files: dict[str, bytes] = {"resutil-stdout.log": f"step {step} run {i}\n".encode()}
        if step == "train":
            files["train.json"] = (f'{{"epochs": {rng.randrange(100, 3000)}, "lr": '
                                   f'{rng.random():.4f}, "final_loss": {rng.random():.5f}}}'
                                   ).encode()
            files["loss.png"] = png(64, 48, i)
        elif step == "evaluate":
            files["metrics.json"] = (f'{{"accuracy": {rng.random():.4f}, "log_loss": '
                                     f'{rng.random():.4f}, "f1": {rng.random():.4f}}}').encode()
            files["decision.svg"] = (
                '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80">'
                f'<rect width="120" height="80" fill="#{i % 256:02x}8899"/></svg>').encode()
        for rel, data in files.items():
            (folder / rel).write_bytes(data)
        meta = ExpMeta(
            name=name, comment=step, run_id=new_run_id(), status="finished",
            args=f"python {step}.py --out {folder} --seed {i}",
            argv=[f"{step}.py", "--out", str(folder), "--seed", str(i)],
            commit_hash=COMMIT, uncommitted_files=[f"{step}.py"] if rng.random() < 0.1 else [],
            started_at=when.isoformat(), ended_at=(when + timedelta(seconds=30)).isoformat(),
            environment={"python": "3.11.7", "host": "node01", "packages": PACKAGES},
            pipeline={"step": step, "params": {"seed": i}},
            manifest=Manifest({rel: (len(data), f"{rng.getrandbits(128):032x}")
                               for rel, data in files.items()}))
        if previous is not None and step != "data":
            meta.add_dependency(previous, "declared")
        write_meta(folder, meta)
        previous = name
    return proj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="experiments")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--target", type=float, default=5.0, help="seconds")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="resutil-bench-report-"))
    try:
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; work {work}")
        t0 = time.perf_counter()
        proj = generate(work, args.n)
        print(f"generated {args.n} experiments in {time.perf_counter() - t0:.1f} s")
        cache = proj / "results" / ".resutil"
        report = [*resutil_cmd(), "report", "-o", str(work / "report")]
        cold, warm, listing = [], [], []
        for _ in range(args.repeat):
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(work / "report", ignore_errors=True)
            cold.append(timed(report, proj))
            warm.append(timed(report, proj))
            listing.append(timed([*resutil_cmd(), "list"], proj))
        pages = len(list((work / "report" / "exp").glob("*.html")))
        size = sum(p.stat().st_size for p in (work / "report").rglob("*") if p.is_file())
        assert pages == args.n, pages
        c, w, ls = (statistics.median(x) for x in (cold, warm, listing))
        cpu = statistics.median(CPU["report"][0::2])  # the runs with no cache
        print(f"\n{'operation':34s} {'median s':>9s}  runs")
        for label, med, runs in ((f"report of {args.n}, no cache", c, cold),
                                 (f"report of {args.n}, cache warm", w, warm),
                                 (f"list of {args.n} (reference)", ls, listing)):
            print(f"{label:34s} {med:9.3f}  {', '.join(f'{t:.2f}' for t in runs)}")
        verdict = "PASS" if max(c, w) < args.target else "FAIL"
        print(f"\nreport, no cache: {c / args.target:.0%} of the {args.target:g} s budget, "
              f"{c / ls:.1f}x list; cache warm: {w / args.target:.0%}, {w / ls:.1f}x list; "
              f"cpu (no cache) median {cpu:.2f} s  {verdict}")
        print(f"report: {pages} pages, {size / 1e6:.1f} MB in all")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
