#!/usr/bin/env python3
"""Profile one ``resutil push`` and/or ``resutil pull`` in-process with cProfile.

Sets up fresh projects (as bench_core.py does) around the generated data, runs the CLI's
entry point inside this interpreter under cProfile, and prints the in-process wall time
and the top functions. Run it with the project's interpreter so that resutil is importable::

    .venv/bin/python benchmarks/profile_push.py [--which A|B] [--op push|pull|both] [--scale F]

Threads started during the command (resutil's worker pools) are profiled too, each with
its own profiler, and merged into the figures: the ``tottime`` column then adds up the
work of all threads (more than the wall time on 2 cores), and the main thread's wait shows
as ``acquire``. The ``.prof`` files are left in ``--out``
(default: a fresh folder under benchmarks/work/) for snakeviz / pstats.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as bc  # noqa: E402


def in_process(argv: list[str], cwd: Path, prof_file: Path, top: int) -> float:
    from resutil.cli import main

    old_cwd, old_argv = os.getcwd(), sys.argv
    os.chdir(cwd)
    sys.argv = ["resutil", *argv]
    prof = cProfile.Profile()
    thread_profs: list[cProfile.Profile] = []

    def start_thread_profiler(frame, event, arg):  # first event in a new thread
        p = cProfile.Profile()
        thread_profs.append(p)
        p.enable()  # replaces this hook for the thread

    bc.sync()
    t = time.perf_counter()
    try:
        threading.setprofile(start_thread_profiler)
        prof.enable()
        try:
            main()
        except SystemExit as e:
            if e.code not in (0, None):
                raise RuntimeError(f"resutil {' '.join(argv)} exited {e.code}") from None
        finally:
            prof.disable()
            threading.setprofile(None)
        return time.perf_counter() - t
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
        stats = pstats.Stats(prof)
        for p in thread_profs:
            p.create_stats()
            stats.add(p)
        stats.dump_stats(prof_file)
        print(f"--- {len(thread_profs)} worker thread(s) profiled besides the main thread")
        for key in ("tottime", "cumulative"):
            s = io.StringIO()
            stats.stream = s
            stats.strip_dirs().sort_stats(key).print_stats(top)
            text = s.getvalue()
            print(f"--- resutil {' '.join(argv)}: top {top} by {key}")
            print(text[text.find("   ncalls"):].rstrip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--which", choices=("A", "B"), default="A")
    ap.add_argument("--op", choices=("push", "pull", "both"), default="both")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, help="folder for the .prof files and the projects")
    ap.add_argument("--workdir", type=Path, help="as in bench_core.py: data/ and work/ live here")
    args = ap.parse_args()

    data_root = (args.workdir / "data") if args.workdir else bc.HERE / "data"
    work_root = (args.workdir / "work") if args.workdir else bc.HERE / "work"
    folder, _ = bc.ensure_data(data_root, args.scale, sys.executable)
    out = args.out or work_root / f"profile-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)
    remote, p1, p2 = out / "remote", out / "push-project", out / "pull-project"
    for d in (remote, p1, p2):
        d.mkdir()
    name = bc.experiment_name(0, args.which)
    resutil = bc.find_resutil(None)
    b = bc.Bench(args, folder, out)
    b.resutil = resutil
    b.resutil_init(p1, remote)
    (p1 / "results").mkdir(exist_ok=True)
    bc.link_copy(folder / args.which, p1 / "results" / name)
    bc.warm(folder / args.which)  # warm cache, as in bench_core.py
    if args.op in ("push", "both"):
        t = in_process(["push", name], p1, out / "push.prof", args.top)
        print(f"\nin-process push of {args.which}: {t:.3f} s\n")
    else:
        bc.run([resutil, "push", name], cwd=p1)
    if args.op in ("pull", "both"):
        b.resutil_init(p2, remote)
        t = in_process(["pull", name], p2, out / "pull.prof", args.top)
        print(f"\nin-process pull of {args.which}: {t:.3f} s\n")
    bc.drop(p1, p2, remote)
    print(f"profiles in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
